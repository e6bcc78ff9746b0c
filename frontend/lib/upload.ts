// Upload client for one track of a recording (no React in here).
//
// Protocol (docs: SPEC §6):
//   client → {"type":"start","mimeType":..,"startedAt":..}
//   server → {"type":"ready","sessionId":..,"track":..,"committed":N}
//   client → binary frames: the track's bytes from offset N on, in order
//   server → {"type":"ack","committed":N}       bytes below N are durable
//   client → {"type":"finish"}
//   server → {"type":"finished","committed":N}  then close 1000
//   errors:  {"type":"error","code":..,"message":..} then close 44xx / 4503
//
// Every recorded byte is kept until the server acknowledges it: first written to
// IndexedDB (lib/persist.ts), then sent, so a reload or a crashed tab can resume
// the upload (see `resume`). Memory holds only the newest chunks, up to
// `memoryBudgetBytes`; older unacknowledged ones are read back from IndexedDB when
// a reconnect has to resend them. When the connection drops, the uploader
// reconnects with exponential backoff and resends from the server's `committed`
// offset, so nothing acknowledged is sent twice and nothing unacknowledged is lost.
// Without IndexedDB (or once it fails, e.g. quota), the rest of the track is kept
// in memory only, as before.

import type { UploadStore } from "./persist";

export type TrackName = "video" | "audio" | "screen";

export type UploadState =
  | "idle"
  | "connecting"
  | "recording"
  | "reconnecting…"
  | "finishing"
  | "uploaded"
  | "error";

export interface UploadStats {
  readonly track: TrackName;
  readonly state: UploadState;
  readonly mimeType: string;
  /** Bytes handed to the uploader by the recorder (when resuming: stored before the reload). */
  readonly bytesRecorded: number;
  /** Bytes written to this browser's IndexedDB so far (a reload keeps them). */
  readonly bytesStored: number;
  /** Unacknowledged bytes held in memory right now (the rest of the backlog is in IndexedDB). */
  readonly bytesInMemory: number;
  /** True while every recorded byte goes to IndexedDB before it is sent. */
  readonly persistent: boolean;
  /** This uploader finishes a recording that a previous page (reload, crash) left behind. */
  readonly resumed: boolean;
  /** The recorder's start, epoch ms (null before it started). */
  readonly startedAt: number | null;
  /** Epoch ms of the recorder event that produced the last kept chunk. */
  readonly recordedUntil: number | null;
  /** Offset up to which bytes were written to the current (or last) socket. */
  readonly bytesSent: number;
  /** Bytes the server has confirmed as durable. */
  readonly bytesAcknowledged: number;
  /** Recorded but not yet acknowledged (what a crash of this tab would lose). */
  readonly backlog: number;
  /** Number of reconnects so far. */
  readonly reconnects: number;
  /** When a reconnect is scheduled: epoch ms of the next attempt. */
  readonly nextRetryAt: number | null;
  /** Last error (server message, or what happened to the connection). */
  readonly error: string | null;
  readonly errorCode: string | null;
  readonly closeCode: number | null;
  /** Set when IndexedDB refused a write (then the rest is kept in memory only). */
  readonly storageError: string | null;
}

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
  store?: UploadStore | null;
  /** Most unacknowledged bytes kept in memory besides IndexedDB. Default 16 MiB. */
  memoryBudgetBytes?: number;
  /** Continue an upload that IndexedDB holds (from `StoredUpload`); no recorder feeds it. */
  resume?: ResumePoint;
  /** For tests: a WebSocket constructor. */
  WebSocketImpl?: typeof WebSocket;
}

export interface ResumePoint {
  /** End of the stored bytes. */
  recorded: number;
  /** Start offsets of the stored chunks, ascending; chunks below the first were acknowledged. */
  offsets: number[];
  recordedUntil: number | null;
}

export const MAX_FRAME_BYTES = 8 * 1024 * 1024;
export const DEFAULT_MEMORY_BUDGET_BYTES = 16 * 1024 * 1024;

/** Close codes after which reconnecting cannot help. */
const FATAL_CLOSE: Record<number, string> = {
  4400: "The server rejected a message from this browser.",
  4401: "The server refused the upload token.",
  4404: "The server does not know this recording (it may have been deleted or expired).",
  4409: "Another tab or window took over this upload.",
  4413: "The recording is larger than the server accepts.",
};

type Listener = (stats: UploadStats) => void;

type ServerMessage =
  | { type: "ready"; sessionId?: string; track?: string; committed: number }
  | { type: "ack"; committed: number }
  | { type: "finished"; committed: number }
  | { type: "error"; code?: string; message?: string };

function parseMessage(data: unknown): ServerMessage | null {
  if (typeof data !== "string") return null;
  try {
    const msg: unknown = JSON.parse(data);
    if (msg && typeof msg === "object" && typeof (msg as { type?: unknown }).type === "string") {
      return msg as ServerMessage;
    }
  } catch {
    // fall through
  }
  return null;
}

export class TrackUploader {
  readonly track: TrackName;
  readonly sessionId: string;
  private readonly opts: Required<
    Pick<
      UploaderOptions,
      | "maxFrameBytes"
      | "highWaterBytes"
      | "initialBackoffMs"
      | "maxBackoffMs"
      | "readyTimeoutMs"
      | "stallTimeoutMs"
      | "memoryBudgetBytes"
    >
  > &
    UploaderOptions;
  private mimeType: string;
  private startedAt: number | null = null;
  private readonly store: UploadStore | null;
  private readonly resumed: boolean;

  // Byte accounting, absolute offsets in the track: committed ≤ sent ≤ kept ≤ received.
  // `received`: handed over by the recorder. `kept`: stored in IndexedDB (or, when
  // storage is unavailable, held in memory): only kept bytes are sent.
  private received = 0;
  private kept = 0;
  private stored = 0;
  private committed = 0;
  private sent = 0;
  private recordedUntil: number | null = null;

  // Kept chunks not yet fully acknowledged, by start offset (ascending); chunk i
  // ends where chunk i+1 starts, the last one at `kept`.
  private offsets: number[] = [];
  // In-memory copies (Map order = offset order). `pinned` ones are in memory only.
  private readonly mem = new Map<number, Blob>();
  private memBytes = 0;
  private readonly pinned = new Set<number>();
  // The last chunk read back from IndexedDB for a resend.
  private readahead: { offset: number; blob: Blob } | null = null;
  private loading = false;
  private readFailures = 0;
  private persisting: boolean;
  private storageError: string | null = null;
  // IndexedDB operations run one after another, in the order they were asked for.
  private storeChain: Promise<void> = Promise.resolve();

  private ws: WebSocket | null = null;
  private ready = false;
  private finishing = false;
  private finishSentOnSocket = false;
  private everSentFinish = false;
  private done = false;
  private state: UploadState = "idle";
  private attempt = 0;
  private reconnects = 0;
  private nextRetryAt: number | null = null;
  private error: string | null = null;
  private errorCode: string | null = null;
  private closeCode: number | null = null;
  private lastHeardAt = 0;

  private retryTimer: ReturnType<typeof setTimeout> | null = null;
  private pumpTimer: ReturnType<typeof setTimeout> | null = null;
  private readyTimer: ReturnType<typeof setTimeout> | null = null;
  private watchdog: ReturnType<typeof setInterval> | null = null;
  private readonly listeners = new Set<Listener>();
  private readonly settled: Promise<UploadStats>;
  private settle!: (stats: UploadStats) => void;
  private readonly onOnline = () => {
    if (this.retryTimer !== null) {
      clearTimeout(this.retryTimer);
      this.retryTimer = null;
      this.connect();
    }
  };

  constructor(options: UploaderOptions) {
    this.opts = {
      maxFrameBytes: MAX_FRAME_BYTES,
      highWaterBytes: 4 * 1024 * 1024,
      initialBackoffMs: 250,
      maxBackoffMs: 5000,
      readyTimeoutMs: 10_000,
      stallTimeoutMs: 30_000,
      memoryBudgetBytes: DEFAULT_MEMORY_BUDGET_BYTES,
      ...options,
    };
    this.track = options.track;
    this.sessionId = options.sessionId;
    this.mimeType = options.mimeType;
    this.store = options.store ?? null;
    this.persisting = this.store !== null;
    const resume = options.resume;
    this.resumed = !!resume;
    if (resume) {
      const end = Math.max(0, resume.recorded);
      this.offsets = resume.offsets.filter((o) => o >= 0 && o < end).sort((a, b) => a - b);
      this.received = this.kept = this.stored = end;
      // Chunks below the first stored one were acknowledged (and deleted) before.
      this.committed = this.sent = this.offsets[0] ?? end;
      this.recordedUntil = resume.recordedUntil;
    }
    this.settled = new Promise((resolve) => {
      this.settle = resolve;
    });
  }

  // ---- public API ---------------------------------------------------------

  get stats(): UploadStats {
    return {
      track: this.track,
      state: this.state,
      mimeType: this.mimeType,
      bytesRecorded: this.received,
      bytesStored: this.stored,
      bytesInMemory: this.memBytes + (this.readahead?.blob.size ?? 0),
      persistent: this.persisting,
      resumed: this.resumed,
      startedAt: this.startedAt,
      recordedUntil: this.recordedUntil,
      bytesSent: this.sent,
      bytesAcknowledged: this.committed,
      backlog: this.received - this.committed,
      reconnects: this.reconnects,
      nextRetryAt: this.nextRetryAt,
      error: this.error,
      errorCode: this.errorCode,
      closeCode: this.closeCode,
      storageError: this.storageError,
    };
  }

  /**
   * Resolves (never rejects) once the track is uploaded or has failed for good, and
   * this browser's stored copy is cleaned up accordingly.
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
   * ms). The blob is written to IndexedDB first and sent once that has committed.
   */
  push(blob: Blob, at?: number): void {
    if (blob.size === 0 || this.finishing || this.resumed) return;
    if (this.done) {
      // Failed for good: count what could not be uploaded, so the backlog shows it.
      if (this.state === "error") {
        this.received += blob.size;
        this.emit();
      }
      return;
    }
    const offset = this.received;
    this.received += blob.size;
    const when = at ?? Date.now();
    this.storeChain = this.storeChain.then(() => this.keep(offset, blob, when)).catch(() => undefined);
    this.emit();
  }

  /**
   * No more data will come (call after the recorder's last `dataavailable`,
   * i.e. from its `stop` event; for a resumed upload right after `start`). Sends
   * `finish` once every byte is kept and sent.
   */
  finish(): Promise<UploadStats> {
    if (!this.done && !this.finishing) {
      this.finishing = true;
      if (this.startedAt === null) {
        // The recorder never started: nothing to upload.
        this.fail("The recorder never started, so nothing was uploaded.", null);
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
   * Stop everything now. Unacknowledged bytes are dropped from memory; the copy in
   * IndexedDB is deleted too unless `keepStored` (then a later page load resumes it).
   */
  abort(reason = "Upload cancelled.", keepStored = false): void {
    if (this.done) return;
    this.fail(reason, null, keepStored);
  }

  // ---- connection ---------------------------------------------------------

  private connect(): void {
    if (this.done || this.startedAt === null) return;
    this.nextRetryAt = null;
    this.setState(this.reconnects === 0 && this.attempt === 0 && !this.ready ? "connecting" : "reconnecting…");
    const query = new URLSearchParams({ session: this.sessionId, token: this.opts.uploadToken });
    const Impl = this.opts.WebSocketImpl ?? WebSocket;
    let ws: WebSocket;
    try {
      ws = new Impl(`${this.opts.url}?${query.toString()}`);
    } catch (e) {
      this.fail(`Could not open the upload connection: ${String(e)}`, null, true);
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
      ws.send(JSON.stringify({ type: "start", mimeType: this.mimeType, startedAt: this.startedAt }));
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

  private onMessage(ws: WebSocket, msg: ServerMessage): void {
    switch (msg.type) {
      case "ready": {
        this.clearReadyTimer();
        const c = Number(msg.committed) || 0;
        if (c > this.kept) {
          this.failAndClose(
            ws,
            `The server already holds ${c} bytes of this track but this tab kept only ${this.kept}; another recorder wrote to it.`,
          );
          return;
        }
        if (c < this.committed) {
          this.failAndClose(
            ws,
            `The server lost acknowledged data (it has ${c} bytes, it had confirmed ${this.committed}).`,
          );
          return;
        }
        this.ready = true;
        this.attempt = 0;
        this.error = null;
        this.errorCode = null;
        this.closeCode = null;
        this.acknowledge(c);
        this.sent = c;
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
        if (this.committed >= this.received) {
          this.complete();
        } else {
          this.failAndClose(
            ws,
            `The server finished the track at ${this.committed} bytes, short of the ${this.received} recorded.`,
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

    if (code === 4409 && (this.everSentFinish || this.resumed) && this.opts.confirmFinished) {
      // Our first `finish` may have landed and only its answer got lost; or, when
      // resuming, the page before the reload finished the track but had not yet
      // deleted its stored copy.
      const bytes = this.received;
      this.opts
        .confirmFinished(this.track, bytes)
        .catch(() => false)
        .then((ok) => {
          if (this.done) return;
          if (ok) {
            this.acknowledge(bytes);
            this.complete();
          } else {
            this.fail(this.describeFatal(code), code, this.errorCode === "superseded");
          }
        });
      return;
    }
    if (code in FATAL_CLOSE) {
      // Retrying cannot help, so the stored copy goes too; except when another
      // connection took this upload over (it may still need a later resume).
      this.fail(this.describeFatal(code), code, code === 4409 && this.errorCode === "superseded");
      return;
    }
    if (!this.error) {
      const why: Record<number, string> = {
        1001: "the server went away",
        1006: "the connection dropped",
        1011: "the server hit an error",
        1012: "the server is restarting",
        1013: "the server is busy",
        4503: "the server's storage is unavailable",
      };
      this.error = `Connection lost: ${why[code] ?? `code ${code}${reason ? `, ${reason}` : ""}`}. Retrying; this tab keeps the recording until the server confirms it.`;
    }
    this.scheduleReconnect();
  }

  private describeFatal(code: number): string {
    const plain = FATAL_CLOSE[code] ?? `The connection was closed (code ${code}).`;
    return this.error && this.error !== plain ? `${plain} (${this.error})` : plain;
  }

  private scheduleReconnect(): void {
    const base = Math.min(this.opts.maxBackoffMs, this.opts.initialBackoffMs * 2 ** this.attempt);
    // "Equal jitter": between half and all of the exponential delay.
    const delay = base / 2 + Math.random() * (base / 2);
    this.attempt += 1;
    this.reconnects += 1;
    this.nextRetryAt = Date.now() + delay;
    this.setState("reconnecting…");
    this.retryTimer = setTimeout(() => {
      this.retryTimer = null;
      this.connect();
    }, delay);
  }

  private checkStall(): void {
    const ws = this.ws;
    if (!ws || !this.ready) return;
    const waiting = this.sent > this.committed || this.finishSentOnSocket;
    if (waiting && Date.now() - this.lastHeardAt > this.opts.stallTimeoutMs) {
      this.error = "The server stopped answering; reconnecting.";
      ws.close(4000, "stalled");
      // Don't wait for the closing handshake of a dead connection.
      this.onClose(4000, "stalled");
    }
  }

  // ---- data ---------------------------------------------------------------

  /** Persist, then keep: the chunk becomes sendable only once IndexedDB has it. */
  private async keep(offset: number, blob: Blob, at: number): Promise<void> {
    let stored = false;
    if (this.persisting && this.store && !this.done) {
      try {
        await this.store.append(this.sessionId, this.track, offset, blob, at);
        stored = true;
        this.stored = offset + blob.size;
      } catch (e) {
        this.storageFailed(e instanceof Error ? e.message : String(e));
      }
    }
    if (this.done) return;
    this.offsets.push(offset);
    this.mem.set(offset, blob);
    this.memBytes += blob.size;
    if (!stored) this.pinned.add(offset);
    this.kept = offset + blob.size;
    this.recordedUntil = at;
    this.pump(); // the fresh chunk usually goes out from memory right away
    this.trimMemory();
    this.emit();
  }

  /** From now on this track is kept in memory only (what is stored so far stays resumable). */
  private storageFailed(why: string): void {
    if (!this.persisting) return;
    this.persisting = false;
    this.storageError = `This browser could not store the recording (${why}). The rest of it is kept in memory only: keep this tab open until the upload finishes.`;
    this.emit();
  }

  /** Keep at most memoryBudgetBytes of stored chunks in memory, dropping the oldest. */
  private trimMemory(): void {
    if (this.memBytes <= this.opts.memoryBudgetBytes) return;
    for (const [offset, blob] of this.mem) {
      if (this.memBytes <= this.opts.memoryBudgetBytes) break;
      if (this.pinned.has(offset)) continue;
      this.mem.delete(offset);
      this.memBytes -= blob.size;
    }
  }

  /** Run an IndexedDB operation after the ones before it; resolves whether it worked. */
  private enqueue(op: (store: UploadStore) => Promise<void>): Promise<boolean> {
    const store = this.store;
    const run = this.storeChain.then(async () => {
      if (!store) return false;
      try {
        await op(store);
        return true;
      } catch {
        return false;
      }
    });
    this.storeChain = run.then(() => undefined);
    return run;
  }

  private chunkEnd(i: number): number {
    return i + 1 < this.offsets.length ? this.offsets[i + 1] : this.kept;
  }

  /** Record that bytes below `offset` are durable; forget (and delete) chunks wholly below it. */
  private acknowledge(offset: number): void {
    const n = Math.min(offset, this.kept);
    if (n > this.committed) this.committed = n;
    let last = -1;
    while (this.offsets.length > 0 && this.chunkEnd(0) <= this.committed) {
      const start = this.offsets.shift() as number;
      const blob = this.mem.get(start);
      if (blob) {
        this.mem.delete(start);
        this.memBytes -= blob.size;
      }
      this.pinned.delete(start);
      last = start;
    }
    if (this.readahead && this.readahead.offset + this.readahead.blob.size <= this.committed) this.readahead = null;
    if (last >= 0 && this.stored > 0) {
      const committed = this.committed;
      void this.enqueue((store) => store.dropThrough(this.sessionId, this.track, last, committed));
    }
  }

  /** Index of the kept chunk holding byte `offset`, or -1. */
  private chunkAt(offset: number): number {
    let lo = 0;
    let hi = this.offsets.length - 1;
    while (lo <= hi) {
      const mid = (lo + hi) >> 1;
      if (this.offsets[mid] <= offset) lo = mid + 1;
      else hi = mid - 1;
    }
    return hi >= 0 && offset < this.chunkEnd(hi) ? hi : -1;
  }

  /**
   * At most one frame's worth of bytes from absolute `offset`; "loading" while the
   * chunk is being read back from IndexedDB (pump runs again when it is there).
   */
  private frameFrom(offset: number): Blob | "loading" | null {
    const i = this.chunkAt(offset);
    if (i < 0) return null;
    const start = this.offsets[i];
    let blob = this.mem.get(start);
    if (!blob && this.readahead?.offset === start) blob = this.readahead.blob;
    if (!blob) {
      if (!this.store) return null;
      this.load(start, this.chunkEnd(i) - start);
      return "loading";
    }
    const from = offset - start;
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
          this.fail(`The stored chunk at byte ${start} of this track is damaged (${blob.size} bytes, expected ${size}).`, null);
          return;
        }
        this.readFailures = 0;
        this.readahead = { offset: start, blob };
        this.pump();
      },
      (e: unknown) => {
        this.loading = false;
        if (this.done) return;
        this.readFailures += 1;
        const why = e instanceof Error ? e.message : String(e);
        if (this.readFailures >= 5) {
          this.fail(`Could not read the recording back from this browser's storage: ${why}`, null, true);
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
    if (!ws || !this.ready || ws.readyState !== WebSocket.OPEN) return;
    let reading = false;
    while (this.sent < this.kept && ws.bufferedAmount < this.opts.highWaterBytes) {
      const frame = this.frameFrom(this.sent);
      if (frame === "loading") {
        reading = true;
        break;
      }
      if (!frame) break;
      ws.send(frame);
      this.sent += frame.size;
    }
    if (this.sent < this.kept) {
      // bufferedAmount has no event: look again shortly (a read calls pump itself).
      if (!reading) this.pumpTimer = setTimeout(() => this.pump(), 50);
    } else if (this.finishing && this.received === this.kept && !this.finishSentOnSocket) {
      ws.send(JSON.stringify({ type: "finish" }));
      this.finishSentOnSocket = true;
      this.everSentFinish = true;
    }
    this.emit();
  }

  // ---- bookkeeping --------------------------------------------------------

  private dropBuffers(): void {
    this.offsets = [];
    this.mem.clear();
    this.memBytes = 0;
    this.pinned.clear();
    this.readahead = null;
  }

  /** Settle once pending IndexedDB work is through (bounded, should storage hang). */
  private settleAfterStore(): void {
    const timeout = new Promise<void>((resolve) => setTimeout(resolve, 5000));
    void Promise.race([this.storeChain, timeout]).then(() => this.settle(this.stats));
  }

  private complete(): void {
    this.done = true;
    this.error = null;
    this.errorCode = null;
    this.dropBuffers();
    this.teardown();
    void this.enqueue((store) => store.remove(this.sessionId, this.track));
    this.setState("uploaded");
    this.settleAfterStore();
  }

  private failAndClose(ws: WebSocket, message: string): void {
    this.fail(message, null);
    try {
      ws.close(1000, "client gave up");
    } catch {
      // ignore
    }
  }

  private fail(message: string, code: number | null, keepStored = false): void {
    this.done = true;
    this.error = message;
    if (code !== null) this.closeCode = code;
    const ws = this.ws;
    this.ws = null;
    if (ws && ws.readyState <= WebSocket.OPEN) {
      try {
        ws.close(1000, "client gave up");
      } catch {
        // ignore
      }
    }
    this.dropBuffers();
    this.teardown();
    if (!keepStored) void this.enqueue((store) => store.remove(this.sessionId, this.track));
    this.setState("error");
    this.settleAfterStore();
  }

  private teardown(): void {
    if (this.retryTimer !== null) clearTimeout(this.retryTimer);
    this.retryTimer = null;
    this.nextRetryAt = null;
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
