// The chunk ledger: which bytes of a track were received, kept, stored, sent and
// acknowledged. Pure arithmetic on absolute byte offsets, no I/O, no Blobs.
//
// Invariants: committed ≤ sent ≤ kept ≤ received, and stored ≤ kept.
//   received   handed over by the recorder (or, resuming, stored before the reload)
//   kept       stored in IndexedDB, or held in memory when storage is unavailable:
//              only kept bytes are sent, so nothing is sent that a reload would lose
//   stored     written to IndexedDB
//   sent       written to the current socket
//   committed  the server's last `ack` / `ready`: durable on the server
// `offsets` holds the start of every kept chunk not yet wholly acknowledged, ascending;
// chunk i ends where chunk i+1 starts, the last one at `kept`.

import type { ResumePoint } from "./types.js";

/** Why the server's `ready` cannot be resumed from. */
export type ReadyProblem = "server-ahead" | "server-lost-data";

export class ChunkLedger {
  received = 0;
  kept = 0;
  stored = 0;
  sent = 0;
  committed = 0;
  private offsets: number[] = [];

  /** A ledger for an upload that storage holds (no recorder feeds it any more). */
  static resumed(point: ResumePoint): ChunkLedger {
    const ledger = new ChunkLedger();
    const end = Math.max(0, point.recorded);
    const all = point.offsets.filter((o) => o >= 0 && o < end).sort((a, b) => a - b);
    const acked = Math.min(end, Math.max(0, point.committed || 0));
    // Chunks wholly below the last ack stay stored but need no resend.
    ledger.offsets = all.filter((o, i) => (i + 1 < all.length ? all[i + 1] : end) > acked);
    ledger.received = ledger.kept = ledger.stored = end;
    // Bytes below the first stored chunk were acknowledged (an older version deleted them).
    ledger.committed = ledger.sent = Math.max(acked, ledger.offsets[0] ?? end);
    return ledger;
  }

  /** Recorded but not yet acknowledged. */
  get backlog(): number {
    return this.received - this.committed;
  }

  /** Start offsets of the chunks still awaiting acknowledgement. */
  get pending(): readonly number[] {
    return this.offsets;
  }

  /** The recorder handed over `size` more bytes; returns the offset they start at. */
  receive(size: number): number {
    const offset = this.received;
    this.received += size;
    return offset;
  }

  /** The chunk at `offset` is kept (stored, or pinned in memory): it may be sent. */
  keep(offset: number, size: number): void {
    this.offsets.push(offset);
    this.kept = offset + size;
  }

  /** Storage holds every byte below `end`. */
  markStored(end: number): void {
    this.stored = Math.max(this.stored, end);
  }

  /** Bytes below `end` went out on the socket. */
  markSent(end: number): void {
    this.sent = end;
  }

  /** What is wrong with a `ready` that reports `committed`, if anything. */
  checkReady(committed: number): ReadyProblem | null {
    if (committed > this.kept) return "server-ahead";
    if (committed < this.committed) return "server-lost-data";
    return null;
  }

  /** A new connection said `ready`: acknowledge `committed` and send from there. */
  ready(committed: number): number[] {
    const released = this.acknowledge(committed).released;
    this.sent = committed;
    return released;
  }

  /**
   * Bytes below `offset` are durable. Returns whether `committed` moved and the start
   * offsets of the chunks now wholly acknowledged (their memory copies can go).
   */
  acknowledge(offset: number): { advanced: boolean; released: number[] } {
    const n = Math.min(offset, this.kept);
    const advanced = n > this.committed;
    if (advanced) this.committed = n;
    const released: number[] = [];
    while (this.offsets.length > 0 && this.chunkEnd(0) <= this.committed) {
      released.push(this.offsets.shift() as number);
    }
    return { advanced, released };
  }

  /** The kept chunk holding byte `offset`: its start and end, or null. */
  chunkAt(offset: number): { start: number; end: number } | null {
    let lo = 0;
    let hi = this.offsets.length - 1;
    while (lo <= hi) {
      const mid = (lo + hi) >> 1;
      if (this.offsets[mid] <= offset) lo = mid + 1;
      else hi = mid - 1;
    }
    if (hi < 0 || offset >= this.chunkEnd(hi)) return null;
    return { start: this.offsets[hi], end: this.chunkEnd(hi) };
  }

  /** Forget every pending chunk (the upload is over). */
  clear(): void {
    this.offsets = [];
  }

  private chunkEnd(i: number): number {
    return i + 1 < this.offsets.length ? this.offsets[i + 1] : this.kept;
  }
}
