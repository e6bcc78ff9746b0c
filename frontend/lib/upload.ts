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
// Every recorded byte is kept in memory until the server acknowledges it. When
// the connection drops, the uploader reconnects with exponential backoff and
// resends from the server's `committed` offset, so nothing acknowledged is sent
// twice and nothing unacknowledged is lost.

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
  /** Bytes handed to the uploader by the recorder. */
  readonly bytesRecorded: number;
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
  /** For tests: a WebSocket constructor. */
  WebSocketImpl?: typeof WebSocket;
}

export const MAX_FRAME_BYTES = 8 * 1024 * 1024;

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
    >
  > &
    UploaderOptions;
  private mimeType: string;
  private startedAt: number | null = null;

  // Unacknowledged bytes: chunks[0] starts at absolute offset `bufferStart`.
  private chunks: Blob[] = [];
  private bufferStart = 0;
  private recorded = 0;
  private committed = 0;
  private sent = 0;

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
      ...options,
    };
    this.track = options.track;
    this.sessionId = options.sessionId;
    this.mimeType = options.mimeType;
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
      bytesRecorded: this.recorded,
      bytesSent: this.sent,
      bytesAcknowledged: this.committed,
      backlog: this.recorded - this.committed,
      reconnects: this.reconnects,
      nextRetryAt: this.nextRetryAt,
      error: this.error,
      errorCode: this.errorCode,
      closeCode: this.closeCode,
    };
  }

  /** Resolves (never rejects) once the track is uploaded or has failed for good. */
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
   * actually produces).
   */
  start(startedAt: number, mimeType?: string): void {
    if (this.startedAt !== null || this.done) return;
    this.startedAt = startedAt;
    if (mimeType) this.mimeType = mimeType;
    if (typeof window !== "undefined") window.addEventListener("online", this.onOnline);
    this.watchdog = setInterval(() => this.checkStall(), 1000);
    this.connect();
  }

  /** Append the recorder's next blob. */
  push(blob: Blob): void {
    if (blob.size === 0 || this.finishing) return;
    if (this.done) {
      // Failed for good: count what could not be uploaded, so the backlog shows it.
      if (this.state === "error") {
        this.recorded += blob.size;
        this.emit();
      }
      return;
    }
    this.chunks.push(blob);
    this.recorded += blob.size;
    this.pump();
    this.emit();
  }

  /**
   * No more data will come (call after the recorder's last `dataavailable`,
   * i.e. from its `stop` event). Sends `finish` once every byte is sent.
   */
  finish(): Promise<UploadStats> {
    if (!this.done && !this.finishing) {
      this.finishing = true;
      if (this.startedAt === null) {
        // The recorder never started: nothing to upload.
        this.fail("The recorder never started, so nothing was uploaded.", null);
      } else {
        // While (re)connecting the state stays as it is; `ready` switches to "finishing".
        if (this.state === "recording") this.setState("finishing");
        this.pump();
      }
    }
    return this.settled;
  }

  /** Stop everything now (e.g. the page is going away); unacknowledged bytes are dropped. */
  abort(reason = "Upload cancelled."): void {
    if (this.done) return;
    this.fail(reason, null);
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
      this.fail(`Could not open the upload connection: ${String(e)}`, null);
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
        if (c > this.recorded) {
          this.failAndClose(
            ws,
            `The server already holds ${c} bytes of this track but this tab recorded only ${this.recorded}; another recorder wrote to it.`,
          );
          return;
        }
        if (c < this.bufferStart) {
          this.failAndClose(
            ws,
            `The server lost acknowledged data (it has ${c} bytes, it had confirmed ${this.bufferStart}).`,
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
        if (this.committed >= this.recorded) {
          this.complete();
        } else {
          this.failAndClose(
            ws,
            `The server finished the track at ${this.committed} bytes, short of the ${this.recorded} recorded.`,
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

    if (code === 4409 && this.everSentFinish && this.opts.confirmFinished) {
      // Our first `finish` may have landed and only its answer got lost.
      const bytes = this.recorded;
      this.opts
        .confirmFinished(this.track, bytes)
        .catch(() => false)
        .then((ok) => {
          if (this.done) return;
          if (ok) {
            this.acknowledge(bytes);
            this.complete();
          } else {
            this.fail(this.describeFatal(code), code);
          }
        });
      return;
    }
    if (code in FATAL_CLOSE) {
      this.fail(this.describeFatal(code), code);
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

  /** Record that bytes below `offset` are durable and drop them from the buffer. */
  private acknowledge(offset: number): void {
    const n = Math.min(offset, this.recorded);
    if (n > this.committed) this.committed = n;
    while (this.chunks.length > 0 && this.bufferStart + this.chunks[0].size <= this.committed) {
      this.bufferStart += this.chunks[0].size;
      this.chunks.shift();
    }
    if (this.chunks.length > 0 && this.bufferStart < this.committed) {
      this.chunks[0] = this.chunks[0].slice(this.committed - this.bufferStart);
      this.bufferStart = this.committed;
    }
    if (this.chunks.length === 0) this.bufferStart = this.committed;
  }

  /** Send what can be sent now; then `finish` when everything is out. */
  private pump(): void {
    this.clearPumpTimer();
    const ws = this.ws;
    if (!ws || !this.ready || ws.readyState !== WebSocket.OPEN) return;
    while (this.sent < this.recorded && ws.bufferedAmount < this.opts.highWaterBytes) {
      const frame = this.sliceFrom(this.sent);
      if (!frame) break;
      ws.send(frame);
      this.sent += frame.size;
    }
    if (this.sent < this.recorded) {
      // bufferedAmount has no event: look again shortly.
      this.pumpTimer = setTimeout(() => this.pump(), 50);
    } else if (this.finishing && !this.finishSentOnSocket) {
      ws.send(JSON.stringify({ type: "finish" }));
      this.finishSentOnSocket = true;
      this.everSentFinish = true;
    }
    this.emit();
  }

  /** At most one frame's worth of bytes starting at absolute offset `offset`. */
  private sliceFrom(offset: number): Blob | null {
    let start = this.bufferStart;
    for (const chunk of this.chunks) {
      const end = start + chunk.size;
      if (offset < end) {
        const from = offset - start;
        const to = Math.min(chunk.size, from + this.opts.maxFrameBytes);
        return chunk.slice(from, to);
      }
      start = end;
    }
    return null;
  }

  // ---- bookkeeping --------------------------------------------------------

  private complete(): void {
    this.done = true;
    this.error = null;
    this.errorCode = null;
    this.chunks = [];
    this.bufferStart = this.committed;
    this.teardown();
    this.setState("uploaded");
    this.settle(this.stats);
  }

  private failAndClose(ws: WebSocket, message: string): void {
    this.fail(message, null);
    try {
      ws.close(1000, "client gave up");
    } catch {
      // ignore
    }
  }

  private fail(message: string, code: number | null): void {
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
    this.teardown();
    this.setState("error");
    this.settle(this.stats);
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
