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
// Every recorded byte is first written to IndexedDB (lib/persist.ts), then sent, so a
// reload or a crashed tab can resume the upload (see `resume`). IndexedDB keeps every
// chunk of the track, from its header on, until the server confirmed the whole track
// (`finished`) or the person discarded it; when the server refuses the track for good
// (state "refused"), nothing is deleted: the person can save the WebM as recorded.
// Memory holds only the newest unacknowledged chunks, up to `memoryBudgetBytes`; older
// ones are read back from IndexedDB when a reconnect has to resend them. When the connection drops, the uploader
// reconnects with exponential backoff and resends from the server's `committed`
// offset, so nothing acknowledged is sent twice and nothing unacknowledged is lost.
// Without IndexedDB (or once it fails, e.g. quota), the rest of the track is kept in
// memory only, and only until acknowledged: a refusal then leaves the unconfirmed
// part, which is all that can be saved.

import type { Refusal, StoredUpload, UploadStore } from "./persist";

export type TrackName = "video" | "audio" | "screen";

export type UploadState =
  | "idle"
  | "connecting"
  | "recording"
  | "reconnecting…"
  | "finishing"
  | "uploaded"
  /** The server refused the track for good; this browser keeps it to save or discard. */
  | "refused"
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
  /** The person discarded this browser's copy (after a refusal or failure). */
  readonly discarded: boolean;
}

/** A track as this browser keeps it, to save as a file. */
export interface LocalRecording {
  blob: Blob;
  /** Byte range of the track that `blob` holds. */
  start: number;
  end: number;
  /** From the header to the last recorded byte: the file plays as recorded. */
  whole: boolean;
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
  /** Last `committed` the server reported (StoredUpload.committed). */
  committed: number;
  /** Start offsets of the stored chunks, ascending (from 0; an older version deleted acknowledged ones). */
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
  4409: "The server accepts no more of this track.",
  4413: "The recording is larger than the server accepts.",
};

/** 4409 comes with a code that says which conflict it is. */
const CONFLICT: Record<string, string> = {
  finished: "The server already closed this recording and accepts no more of it.",
  superseded: "Another tab or window took over this upload.",
};

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

  // done: nothing more is sent (uploaded, refused or failed); completed: the server
  // confirmed the whole track; discarded: the person threw this browser's copy away.
  private completed = false;
  private discarded = false;

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
      const all = resume.offsets.filter((o) => o >= 0 && o < end).sort((a, b) => a - b);
      const acked = Math.min(end, Math.max(0, resume.committed || 0));
      // Chunks wholly below the last ack stay stored but need no resend.
      this.offsets = all.filter((o, i) => (i + 1 < all.length ? all[i + 1] : end) > acked);
      this.received = this.kept = this.stored = end;
      // Bytes below the first stored chunk were acknowledged (an older version deleted them).
      this.committed = this.sent = Math.max(acked, this.offsets[0] ?? end);
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
   * ms). The blob is written to IndexedDB first and sent once that has committed.
   */
  push(blob: Blob, at?: number): void {
    // After a refusal or failure the chunks are still kept (to be saved as a file).
    if (blob.size === 0 || this.finishing || this.resumed || this.completed || this.discarded) return;
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
    if (this.done && !this.completed && !this.discarded && !this.finishing && !this.resumed) {
      // Refused or failed while recording: the stored copy is now complete.
      this.finishing = true;
      if (this.stored > 0) void this.enqueue((store) => store.update(this.sessionId, this.track, { stopped: true }));
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
   * Stop sending now. The copy in IndexedDB stays (a later page load resumes it);
   * only `discard` deletes it.
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
    await this.storeChain;
    const parts: Blob[] = [];
    let start = 0;
    let end = 0;
    let any = false;
    if (this.store && this.stored > 0 && !this.discarded) {
      const kept = await this.store.readAll(this.sessionId, this.track);
      if (kept.end > kept.start) {
        parts.push(kept.blob);
        start = kept.start;
        end = kept.end;
        any = true;
      }
    }
    for (const offset of [...this.pinned].sort((a, b) => a - b)) {
      const blob = this.mem.get(offset);
      if (!blob || (any && offset < end)) continue;
      if (any && offset > end) break; // a gap: what follows would not play after it
      if (!any) {
        start = end = offset;
        any = true;
      }
      parts.push(blob);
      end += blob.size;
    }
    return { blob: new Blob(parts, { type: this.mimeType }), start, end, whole: start === 0 && end === this.received };
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
    this.nextRetryAt = null;
    this.setState(this.reconnects === 0 && this.attempt === 0 && !this.ready ? "connecting" : "reconnecting…");
    const query = new URLSearchParams({ session: this.sessionId, token: this.opts.uploadToken });
    const Impl = this.opts.WebSocketImpl ?? WebSocket;
    let ws: WebSocket;
    try {
      ws = new Impl(`${this.opts.url}?${query.toString()}`);
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
            this.fail(this.describeFatal(code), code, this.fatalKind(code));
          }
        });
      return;
    }
    if (code in FATAL_CLOSE) {
      // Retrying cannot help. The stored copy stays (to save or discard); another
      // connection that took this upload over is no refusal (a later load may resume it).
      this.fail(this.describeFatal(code), code, this.fatalKind(code));
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

  private fatalKind(code: number): Failure {
    return code === 4409 && this.errorCode === "superseded" ? "error" : "refused";
  }

  private describeFatal(code: number): string {
    const plain =
      (code === 4409 && this.errorCode ? CONFLICT[this.errorCode] : undefined) ??
      FATAL_CLOSE[code] ??
      `The connection was closed (code ${code}).`;
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
    if (this.completed || this.discarded) return;
    let stored = false;
    if (this.persisting && this.store) {
      try {
        await this.store.append(this.sessionId, this.track, offset, blob, at);
        stored = true;
        this.stored = offset + blob.size;
      } catch (e) {
        this.storageFailed(e instanceof Error ? e.message : String(e));
      }
    }
    if (this.completed || this.discarded) return;
    if (this.done) {
      // Refused or failed: nothing more is sent, but the chunk is kept to be saved.
      if (!stored) {
        this.offsets.push(offset);
        this.mem.set(offset, blob);
        this.memBytes += blob.size;
        this.pinned.add(offset);
      }
      this.kept = offset + blob.size;
      this.recordedUntil = at;
      this.emit();
      return;
    }
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

  /**
   * Record that bytes below `offset` are durable; chunks wholly below it leave memory
   * (IndexedDB keeps them until the whole track is confirmed).
   */
  private acknowledge(offset: number): void {
    const n = Math.min(offset, this.kept);
    const advanced = n > this.committed;
    if (advanced) this.committed = n;
    while (this.offsets.length > 0 && this.chunkEnd(0) <= this.committed) {
      const start = this.offsets.shift() as number;
      const blob = this.mem.get(start);
      if (blob) {
        this.mem.delete(start);
        this.memBytes -= blob.size;
      }
      this.pinned.delete(start);
    }
    if (this.readahead && this.readahead.offset + this.readahead.blob.size <= this.committed) this.readahead = null;
    if (advanced && this.stored > 0) {
      const committed = this.committed;
      void this.enqueue((store) => store.setCommitted(this.sessionId, this.track, committed));
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
          this.fail(`The stored chunk at byte ${start} of this track is damaged (${blob.size} bytes, expected ${size}).`, null, "error");
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
  private failAndClose(ws: WebSocket, message: string): void {
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
    if (ws && ws.readyState <= WebSocket.OPEN) {
      try {
        ws.close(1000, "client gave up");
      } catch {
        // ignore
      }
    }
    // Stored chunks need no memory copy any more; memory-only ones are all there is.
    for (const [offset, blob] of this.mem) {
      if (this.pinned.has(offset)) continue;
      this.mem.delete(offset);
      this.memBytes -= blob.size;
    }
    this.readahead = null;
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
