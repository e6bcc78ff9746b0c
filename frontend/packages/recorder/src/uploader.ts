// Upload client for one track of a recording: it wires the pure parts (the chunk ledger,
// the memory budget, the close policy) to the injected I/O (a WebSocket factory and a
// ChunkStore) and to timers.
//
// Protocol (docs/protocol.md):
//   client → {"type":"start","mimeType":..,"startedAt":..}
//   server → {"type":"ready","sessionId":..,"track":..,"committed":N}
//   client → binary frames: the track's bytes from offset N on, in order
//   server → {"type":"ack","committed":N}       bytes below N are durable
//   client → {"type":"finish"}
//   server → {"type":"finished","committed":N}  then close 1000
//   errors:  {"type":"error","code":..,"message":..} then close 44xx / 4503
//
// Every recorded byte is first written to the store (IndexedDB), then sent, so a reload
// or a crashed tab can resume the upload (see `resume`). The store keeps every chunk of
// the track, from its header on, until the server confirmed the whole track (`finished`)
// or the person discarded it; when the server refuses the track for good (state
// "refused"), nothing is deleted: the person can save the WebM as recorded. Memory holds
// only the newest unacknowledged chunks, up to `memoryBudgetBytes`; older ones are read
// back from the store when a reconnect has to resend them. When the connection drops,
// the uploader reconnects with exponential backoff and jitter and resends from the
// server's `committed` offset. Without a store (or once it fails, e.g. quota), the rest
// of the track is kept in memory only, and only until acknowledged: a refusal then
// leaves the unconfirmed part, which is all that can be saved.

import { ChunkLedger } from "./ledger.js";
import { MemoryBudget } from "./memory.js";
import { StoreQueue } from "./queue.js";
import { Reconnector } from "./reconnect.js";
import { decideClose, type CloseDecision } from "./policy.js";
import { FINISH_MESSAGE, parseMessage, socketUrl, startMessage, type ServerMessage } from "./protocol.js";
import type { ChunkStore, Refusal, StoredUpload } from "./store.js";
import type { LocalRecording, ResumePoint, TrackName, UploadState, UploadStats } from "./types.js";

/** The part of a WebSocket the uploader uses (the browser's WebSocket has it). */
export interface SocketLike {
  binaryType: BinaryType;
  readonly readyState: number;
  readonly bufferedAmount: number;
  send(data: string | Blob | ArrayBuffer): void;
  close(code?: number, reason?: string): void;
  onopen: ((ev: Event) => unknown) | null;
  onmessage: ((ev: MessageEvent) => unknown) | null;
  onerror: ((ev: Event) => unknown) | null;
  onclose: ((ev: CloseEvent) => unknown) | null;
}

/** Opens a socket to a URL (default: `new WebSocket(url)`). */
export type SocketFactory = (url: string) => SocketLike;

const OPEN = 1; // WebSocket.OPEN, spelled out: Node has no WebSocket global before 22

export interface UploaderOptions {
  track: TrackName;
  sessionId: string;
  uploadToken: string;
  mimeType: string;
  /** WebSocket URL of the track endpoint without query, e.g. ws://host/ws/video. */
  url: string;
  /** Largest binary frame to send (the server's MAX_FRAME_BYTES). Default 8 MiB. */
  maxFrameBytes?: number;
  /** Stop queueing on the socket while its bufferedAmount is above this. Default 4 MiB. */
  highWaterBytes?: number;
  /** First reconnect delay; doubles up to maxBackoffMs. Defaults 250 ms / 5 s. */
  initialBackoffMs?: number;
  maxBackoffMs?: number;
  /** Give up on a connection that has not said `ready` after this long. Default 10 s. */
  readyTimeoutMs?: number;
  /** Reconnect when bytes are outstanding and the server said nothing for this long. Default 30 s. */
  stallTimeoutMs?: number;
  /**
   * Asked when the server refuses a reconnect with 4409 after this client had
   * already sent `finish` (the first `finished` reply may have been lost with
   * the connection). Resolve true when the server holds the whole track as
   * finished (e.g. by reading GET /api/sessions/{id}).
   */
  confirmFinished?: (track: TrackName, bytes: number) => Promise<boolean>;
  /** Where to keep unacknowledged bytes across reloads; null/absent: memory only. */
  store?: ChunkStore | null;
  /** Most unacknowledged bytes kept in memory besides the store. Default 16 MiB. */
  memoryBudgetBytes?: number;
  /** Continue an upload that the store holds (from `StoredUpload`); no recorder feeds it. */
  resume?: ResumePoint;
  /** Opens the connection (tests pass a fake). Default: the browser's WebSocket. */
  socket?: SocketFactory;
  /** Random numbers in [0, 1) for the reconnect jitter (tests pass a fixed one). */
  random?: () => number;
}

export const MAX_FRAME_BYTES = 8 * 1024 * 1024;
export const DEFAULT_MEMORY_BUDGET_BYTES = 16 * 1024 * 1024;

/** Stats for a track that IndexedDB keeps as refused (no uploader runs for it). */
export function storedStats(record: StoredUpload): UploadStats {
  const refused = record.refused ?? null;
  return {
    track: record.track,
    state: refused ? "refused" : "error",
    mimeType: record.mimeType,
    bytesRecorded: record.recorded,
    bytesStored: record.recorded,
    bytesInMemory: 0,
    persistent: true,
    resumed: true,
    startedAt: record.startedAt,
    recordedUntil: record.recordedUntil,
    bytesSent: record.committed,
    bytesAcknowledged: record.committed,
    backlog: Math.max(0, record.recorded - record.committed),
    reconnects: 0,
    nextRetryAt: null,
    error: refused?.message ?? null,
    errorCode: refused?.code ?? null,
    closeCode: refused?.closeCode ?? null,
    storageError: null,
    discarded: false,
  };
}

/** How a failure ends the upload: the server refused it, or it failed (e.g. on this side). */
type Failure = "refused" | "error";

type Listener = (stats: UploadStats) => void;

const defaultSocket: SocketFactory = (url) => new WebSocket(url);

export class TrackUploader {
  readonly track: TrackName;
  readonly sessionId: string;
  private readonly opts: Required<
    Pick<
      UploaderOptions,
      "maxFrameBytes" | "highWaterBytes" | "initialBackoffMs" | "maxBackoffMs" | "readyTimeoutMs" | "stallTimeoutMs"
    >
  > &
    UploaderOptions;
  private mimeType: string;
  private startedAt: number | null = null;
  private readonly store: ChunkStore | null;
  private readonly resumed: boolean;
  private readonly ledger: ChunkLedger;
  private readonly memory: MemoryBudget;
  private recordedUntil: number | null = null;

  private loading = false;
  private readFailures = 0;
  private persisting: boolean;
  private storageError: string | null = null;
  private readonly queue: StoreQueue;

  // done: nothing more is sent (uploaded, refused or failed); completed: the server
  // confirmed the whole track; discarded: the person threw this browser's copy away.
  private completed = false;
  private discarded = false;

  private ws: SocketLike | null = null;
  private ready = false;
  private finishing = false;
  private finishSentOnSocket = false;
  private everSentFinish = false;
  private done = false;
  private state: UploadState = "idle";
  private readonly retry: Reconnector;
  private error: string | null = null;
  private errorCode: string | null = null;
  private closeCode: number | null = null;
  private lastHeardAt = 0;

  private pumpTimer: ReturnType<typeof setTimeout> | null = null;
  private readyTimer: ReturnType<typeof setTimeout> | null = null;
  private watchdog: ReturnType<typeof setInterval> | null = null;
  private readonly listeners = new Set<Listener>();
  private readonly settled: Promise<UploadStats>;
  private settle!: (stats: UploadStats) => void;
  private readonly onOnline = () => this.retry.now();

  constructor(options: UploaderOptions) {
    this.opts = {
      maxFrameBytes: MAX_FRAME_BYTES,
      highWaterBytes: 4 * 1024 * 1024,
      initialBackoffMs: 250,
      maxBackoffMs: 5000,
      readyTimeoutMs: 10_000,
      stallTimeoutMs: 30_000,
      ...options,
    };
    this.track = options.track;
    this.sessionId = options.sessionId;
    this.mimeType = options.mimeType;
    this.store = options.store ?? null;
    this.persisting = this.store !== null;
    this.queue = new StoreQueue(this.store);
    this.retry = new Reconnector(this.opts, () => this.connect(), options.random);
    this.memory = new MemoryBudget(options.memoryBudgetBytes ?? DEFAULT_MEMORY_BUDGET_BYTES);
    const resume = options.resume;
    this.resumed = !!resume;
    this.ledger = resume ? ChunkLedger.resumed(resume) : new ChunkLedger();
    if (resume) this.recordedUntil = resume.recordedUntil;
    this.settled = new Promise((resolve) => {
      this.settle = resolve;
    });
  }

  // ---- public API ---------------------------------------------------------

  get stats(): UploadStats {
    const l = this.ledger;
    return {
      track: this.track,
      state: this.state,
      mimeType: this.mimeType,
      bytesRecorded: l.received,
      bytesStored: l.stored,
      bytesInMemory: this.memory.bytes,
      persistent: this.persisting,
      resumed: this.resumed,
      startedAt: this.startedAt,
      recordedUntil: this.recordedUntil,
      bytesSent: l.sent,
      bytesAcknowledged: l.committed,
      backlog: l.backlog,
      reconnects: this.retry.count,
      nextRetryAt: this.retry.nextAt,
      error: this.error,
      errorCode: this.errorCode,
      closeCode: this.closeCode,
      storageError: this.storageError,
      discarded: this.discarded,
    };
  }

  /**
   * Resolves (never rejects) once the track is uploaded (and this browser's copy
   * deleted), refused or failed for good (the copy is kept).
   */
  get whenSettled(): Promise<UploadStats> {
    return this.settled;
  }

  subscribe(listener: Listener): () => void {
    this.listeners.add(listener);
    listener(this.stats);
    return () => {
      this.listeners.delete(listener);
    };
  }

  /**
   * Open the connection. `startedAt` is the recorder's start time (epoch ms);
   * `mimeType` may refine the one given to the constructor (what the recorder
   * actually produces). For a resumed upload, pass the stored values.
   */
  start(startedAt: number, mimeType?: string): void {
    if (this.startedAt !== null || this.done) return;
    this.startedAt = startedAt;
    if (mimeType) this.mimeType = mimeType;
    if (!this.resumed && this.persisting) {
      const upload = {
        sessionId: this.sessionId,
        track: this.track,
        uploadToken: this.opts.uploadToken,
        mimeType: this.mimeType,
        startedAt,
      };
      this.enqueue((store) => store.begin(upload)).then((ok) => {
        if (!ok) this.storageFailed("could not create the upload record");
      });
    }
    if (typeof window !== "undefined") window.addEventListener("online", this.onOnline);
    this.watchdog = setInterval(() => this.checkStall(), 1000);
    this.connect();
  }

  /**
   * Append the recorder's next blob. `at` is when the recorder produced it (epoch
   * ms). The blob is written to the store first and sent once that has committed.
   */
  push(blob: Blob, at?: number): void {
    // After a refusal or failure the chunks are still kept (to be saved as a file).
    if (blob.size === 0 || this.finishing || this.resumed || this.completed || this.discarded) return;
    const offset = this.ledger.receive(blob.size);
    const when = at ?? Date.now();
    this.queue.then(() => this.keep(offset, blob, when));
    this.emit();
  }

  /**
   * No more data will come (call after the recorder's last `dataavailable`,
   * i.e. from its `stop` event; for a resumed upload right after `start`). Sends
   * `finish` once every byte is kept and sent.
   */
  finish(): Promise<UploadStats> {
    if (this.done && !this.completed && !this.discarded && !this.finishing && !this.resumed) {
      // Refused or failed while recording: the stored copy is now complete.
      this.finishing = true;
      if (this.ledger.stored > 0) void this.enqueue((store) => store.update(this.sessionId, this.track, { stopped: true }));
    }
    if (!this.done && !this.finishing) {
      this.finishing = true;
      if (this.startedAt === null) {
        // The recorder never started: nothing to upload.
        this.fail("The recorder never started, so nothing was uploaded.", null, "error");
      } else {
        if (!this.resumed && this.persisting) {
          void this.enqueue((store) => store.update(this.sessionId, this.track, { stopped: true }));
        }
        // While (re)connecting the state stays as it is; `ready` switches to "finishing".
        if (this.state === "recording") this.setState("finishing");
        this.pump();
      }
    }
    return this.settled;
  }

  /**
   * Stop sending now. The stored copy stays (a later page load resumes it); only
   * `discard` deletes it.
   */
  abort(reason = "Upload cancelled."): void {
    if (this.done) return;
    this.fail(reason, null, "error");
  }

  /**
   * The track as this browser keeps it, in order: the stored chunks (from the header
   * on), then those held in memory only. Includes every chunk pushed so far.
   */
  async recording(): Promise<LocalRecording> {
    await this.queue.idle;
    const parts: Blob[] = [];
    let start = 0;
    let end = 0;
    let any = false;
    if (this.store && this.ledger.stored > 0 && !this.discarded) {
      const kept = await this.store.readAll(this.sessionId, this.track);
      if (kept.end > kept.start) {
        parts.push(kept.blob);
        start = kept.start;
        end = kept.end;
        any = true;
      }
    }
    for (const [offset, blob] of this.memory.pinnedChunks()) {
      if (any && offset < end) continue;
      if (any && offset > end) break; // a gap: what follows would not play after it
      if (!any) {
        start = end = offset;
        any = true;
      }
      parts.push(blob);
      end += blob.size;
    }
    return {
      blob: new Blob(parts, { type: this.mimeType }),
      start,
      end,
      whole: start === 0 && end === this.ledger.received,
    };
  }

  /** The person threw this browser's copy away: delete it (stops the upload first). */
  async discard(): Promise<void> {
    if (!this.done) this.fail("The recording was discarded.", null, "error");
    this.discarded = true;
    this.dropBuffers();
    const ok = await this.enqueue((store) => store.remove(this.sessionId, this.track));
    this.emit();
    if (!ok && this.store) throw new Error("This browser could not delete its copy of the recording.");
  }

  // ---- connection ---------------------------------------------------------

  private connect(): void {
    if (this.done || this.startedAt === null) return;
    this.retry.cancel();
    this.setState(this.retry.count === 0 && !this.ready ? "connecting" : "reconnecting…");
    const open = this.opts.socket ?? defaultSocket;
    let ws: SocketLike;
    try {
      ws = open(socketUrl(this.opts.url, this.sessionId, this.opts.uploadToken));
    } catch (e) {
      this.fail(`Could not open the upload connection: ${String(e)}`, null, "error");
      return;
    }
    ws.binaryType = "arraybuffer";
    this.ws = ws;
    this.ready = false;
    this.finishSentOnSocket = false;
    this.lastHeardAt = Date.now();
    this.readyTimer = setTimeout(() => {
      if (this.ws === ws && !this.ready) ws.close(4000, "no ready in time");
    }, this.opts.readyTimeoutMs);

    ws.onopen = () => {
      if (this.ws !== ws) return;
      ws.send(startMessage(this.mimeType, this.startedAt));
    };
    ws.onmessage = (ev: MessageEvent) => {
      if (this.ws !== ws) return;
      this.lastHeardAt = Date.now();
      const msg = parseMessage(ev.data);
      if (msg) this.onMessage(ws, msg);
    };
    ws.onerror = () => {
      // A close event always follows; reconnecting is decided there.
    };
    ws.onclose = (ev: CloseEvent) => {
      if (this.ws !== ws) return;
      this.onClose(ev.code, ev.reason);
    };
  }

  private onMessage(ws: SocketLike, msg: ServerMessage): void {
    switch (msg.type) {
      case "ready": {
        this.clearReadyTimer();
        const c = Number(msg.committed) || 0;
        const problem = this.ledger.checkReady(c);
        if (problem === "server-ahead") {
          this.failAndClose(
            ws,
            `The server already holds ${c} bytes of this track but this tab kept only ${this.ledger.kept}; another recorder wrote to it.`,
          );
          return;
        }
        if (problem === "server-lost-data") {
          this.failAndClose(
            ws,
            `The server lost acknowledged data (it has ${c} bytes, it had confirmed ${this.ledger.committed}).`,
          );
          return;
        }
        this.ready = true;
        this.retry.succeeded();
        this.error = null;
        this.errorCode = null;
        this.closeCode = null;
        this.acknowledge(c);
        this.ledger.markSent(c);
        this.setState(this.finishing ? "finishing" : "recording");
        this.pump();
        return;
      }
      case "ack": {
        this.acknowledge(Number(msg.committed) || 0);
        this.pump();
        this.emit();
        return;
      }
      case "finished": {
        this.acknowledge(Number(msg.committed) || 0);
        if (this.ledger.committed >= this.ledger.received) {
          this.complete();
        } else {
          this.failAndClose(
            ws,
            `The server finished the track at ${this.ledger.committed} bytes, short of the ${this.ledger.received} recorded.`,
          );
        }
        return;
      }
      case "error": {
        this.errorCode = msg.code ?? null;
        this.error = msg.message ?? msg.code ?? "The server reported an error.";
        this.emit();
        return;
      }
    }
  }

  private onClose(code: number, reason: string): void {
    this.ws = null;
    this.ready = false;
    this.clearReadyTimer();
    this.clearPumpTimer();
    this.closeCode = code;
    if (this.done) return;
    const decision: CloseDecision = decideClose(code, reason, {
      errorCode: this.errorCode,
      errorMessage: this.error,
      mayBeFinished: this.everSentFinish || this.resumed,
      canConfirm: !!this.opts.confirmFinished,
    });
    switch (decision.action) {
      case "confirm": {
        const bytes = this.ledger.received;
        const confirm = this.opts.confirmFinished as NonNullable<UploaderOptions["confirmFinished"]>;
        confirm(this.track, bytes)
          .catch(() => false)
          .then((ok) => {
            if (this.done) return;
            if (ok) {
              this.acknowledge(bytes);
              this.complete();
            } else {
              this.fail(decision.ifNot.message, code, decision.ifNot.kind);
            }
          });
        return;
      }
      case "stop":
        // Retrying cannot help. The stored copy stays (to save or discard).
        this.fail(decision.message, code, decision.kind);
        return;
      case "retry":
        if (!this.error) this.error = decision.message;
        this.scheduleReconnect();
        return;
    }
  }

  private scheduleReconnect(): void {
    this.retry.schedule();
    this.setState("reconnecting…");
  }

  private checkStall(): void {
    const ws = this.ws;
    if (!ws || !this.ready) return;
    const waiting = this.ledger.sent > this.ledger.committed || this.finishSentOnSocket;
    if (waiting && Date.now() - this.lastHeardAt > this.opts.stallTimeoutMs) {
      this.error = "The server stopped answering; reconnecting.";
      ws.close(4000, "stalled");
      // Don't wait for the closing handshake of a dead connection.
      this.onClose(4000, "stalled");
    }
  }

  // ---- data ---------------------------------------------------------------

  /** Persist, then keep: the chunk becomes sendable only once the store has it. */
  private async keep(offset: number, blob: Blob, at: number): Promise<void> {
    if (this.completed || this.discarded) return;
    let stored = false;
    if (this.persisting && this.store) {
      try {
        await this.store.append(this.sessionId, this.track, offset, blob, at);
        stored = true;
        this.ledger.markStored(offset + blob.size);
      } catch (e) {
        this.storageFailed(e instanceof Error ? e.message : String(e));
      }
    }
    if (this.completed || this.discarded) return;
    if (this.done) {
      // Refused or failed: nothing more is sent, but the chunk is kept to be saved.
      if (!stored) this.memory.put(offset, blob, true);
      this.ledger.keep(offset, blob.size);
      this.recordedUntil = at;
      this.emit();
      return;
    }
    this.memory.put(offset, blob, !stored);
    this.ledger.keep(offset, blob.size);
    this.recordedUntil = at;
    this.pump(); // the fresh chunk usually goes out from memory right away
    this.memory.spill();
    this.emit();
  }

  /** From now on this track is kept in memory only (what is stored so far stays resumable). */
  private storageFailed(why: string): void {
    if (!this.persisting) return;
    this.persisting = false;
    this.storageError = `This browser could not store the recording (${why}). The rest of it is kept in memory only: keep this tab open until the upload finishes.`;
    this.emit();
  }

  private enqueue(op: (store: ChunkStore) => Promise<void>): Promise<boolean> {
    return this.queue.run(op);
  }

  /**
   * Record that bytes below `offset` are durable; chunks wholly below it leave memory
   * (the store keeps them until the whole track is confirmed).
   */
  private acknowledge(offset: number): void {
    const { advanced, released } = this.ledger.acknowledge(offset);
    for (const start of released) this.memory.release(start);
    const committed = this.ledger.committed;
    this.memory.releaseReadaheadBelow(committed);
    if (advanced && this.ledger.stored > 0) {
      void this.enqueue((store) => store.setCommitted(this.sessionId, this.track, committed));
    }
  }

  /**
   * At most one frame's worth of bytes from absolute `offset`; "loading" while the
   * chunk is being read back from the store (pump runs again when it is there).
   */
  private frameFrom(offset: number): Blob | "loading" | null {
    const chunk = this.ledger.chunkAt(offset);
    if (!chunk) return null;
    const blob = this.memory.get(chunk.start);
    if (!blob) {
      if (!this.store) return null;
      this.load(chunk.start, chunk.end - chunk.start);
      return "loading";
    }
    const from = offset - chunk.start;
    return blob.slice(from, Math.min(blob.size, from + this.opts.maxFrameBytes));
  }

  private load(start: number, size: number): void {
    if (this.loading || !this.store) return;
    this.loading = true;
    this.store.read(this.sessionId, this.track, start).then(
      (blob) => {
        this.loading = false;
        if (this.done) return;
        if (blob.size !== size) {
          this.fail(`The stored chunk at byte ${start} of this track is damaged (${blob.size} bytes, expected ${size}).`, null, "error");
          return;
        }
        this.readFailures = 0;
        this.memory.setReadahead(start, blob);
        this.pump();
      },
      (e: unknown) => {
        this.loading = false;
        if (this.done) return;
        this.readFailures += 1;
        const why = e instanceof Error ? e.message : String(e);
        if (this.readFailures >= 5) {
          this.fail(`Could not read the recording back from this browser's storage: ${why}`, null, "error");
        } else {
          this.error = `Reading the recording back from this browser's storage failed (${why}); trying again.`;
          this.pumpTimer = setTimeout(() => this.pump(), 500 * this.readFailures);
          this.emit();
        }
      },
    );
  }

  /** Send what can be sent now; then `finish` when everything is kept and out. */
  private pump(): void {
    this.clearPumpTimer();
    const ws = this.ws;
    const l = this.ledger;
    if (!ws || !this.ready || ws.readyState !== OPEN) return;
    let reading = false;
    while (l.sent < l.kept && ws.bufferedAmount < this.opts.highWaterBytes) {
      const frame = this.frameFrom(l.sent);
      if (frame === "loading") {
        reading = true;
        break;
      }
      if (!frame) break;
      ws.send(frame);
      l.markSent(l.sent + frame.size);
    }
    if (l.sent < l.kept) {
      // bufferedAmount has no event: look again shortly (a read calls pump itself).
      if (!reading) this.pumpTimer = setTimeout(() => this.pump(), 50);
    } else if (this.finishing && l.received === l.kept && !this.finishSentOnSocket) {
      ws.send(FINISH_MESSAGE);
      this.finishSentOnSocket = true;
      this.everSentFinish = true;
    }
    this.emit();
  }

  // ---- bookkeeping --------------------------------------------------------

  private dropBuffers(): void {
    this.ledger.clear();
    this.memory.clear();
  }

  /** Settle once pending store work is through (bounded, should storage hang). */
  private settleAfterStore(): void {
    const timeout = new Promise<void>((resolve) => setTimeout(resolve, 5000));
    void Promise.race([this.queue.idle, timeout]).then(() => this.settle(this.stats));
  }

  private complete(): void {
    this.done = true;
    this.completed = true;
    this.error = null;
    this.errorCode = null;
    this.dropBuffers();
    this.teardown();
    void this.enqueue((store) => store.remove(this.sessionId, this.track));
    this.setState("uploaded");
    this.settleAfterStore();
  }

  /** The server's answer makes this upload impossible: a refusal (the copy is kept). */
  private failAndClose(ws: SocketLike, message: string): void {
    this.fail(message, null, "refused");
    try {
      ws.close(1000, "client gave up");
    } catch {
      // ignore
    }
  }

  /** Stop for good. Never deletes this browser's copy: only `complete` and `discard` do. */
  private fail(message: string, code: number | null, kind: Failure): void {
    this.done = true;
    this.error = message;
    if (code !== null) this.closeCode = code;
    const ws = this.ws;
    this.ws = null;
    if (ws && ws.readyState <= OPEN) {
      try {
        ws.close(1000, "client gave up");
      } catch {
        // ignore
      }
    }
    // Stored chunks need no memory copy any more; memory-only ones are all there is.
    this.memory.dropStored();
    this.teardown();
    if (kind === "refused") {
      const refused: Refusal = { code: this.errorCode, message, closeCode: this.closeCode, at: Date.now() };
      // A reload then offers the copy to save or discard instead of retrying.
      void this.enqueue((store) => store.update(this.sessionId, this.track, { refused }));
    }
    this.setState(kind);
    this.settleAfterStore();
  }

  private teardown(): void {
    this.retry.cancel();
    this.clearPumpTimer();
    this.clearReadyTimer();
    if (this.watchdog !== null) clearInterval(this.watchdog);
    this.watchdog = null;
    if (typeof window !== "undefined") window.removeEventListener("online", this.onOnline);
  }

  private clearPumpTimer(): void {
    if (this.pumpTimer !== null) clearTimeout(this.pumpTimer);
    this.pumpTimer = null;
  }

  private clearReadyTimer(): void {
    if (this.readyTimer !== null) clearTimeout(this.readyTimer);
    this.readyTimer = null;
  }

  private setState(state: UploadState): void {
    this.state = state;
    this.emit();
  }

  private emit(): void {
    const stats = this.stats;
    for (const listener of this.listeners) listener(stats);
  }
}
