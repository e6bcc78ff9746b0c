// What to do when a connection closes, and how long to wait before the next try.
// Pure: the uploader asks, these answer (docs/protocol.md, "Errors").

/** Close codes after which reconnecting cannot help. */
export const FATAL_CLOSE: Readonly<Record<number, string>> = {
  4400: "The server rejected a message from this browser.",
  4401: "The server refused the upload token.",
  4404: "The server does not know this recording (it may have been deleted or expired).",
  4409: "The server accepts no more of this track.",
  4413: "The recording is larger than the server accepts.",
};

/** 4409 comes with a code that says which conflict it is. */
const CONFLICT: Readonly<Record<string, string>> = {
  finished: "The server already closed this recording and accepts no more of it.",
  superseded: "Another tab or window took over this upload.",
};

const TRANSIENT: Readonly<Record<number, string>> = {
  1001: "the server went away",
  1006: "the connection dropped",
  1011: "the server hit an error",
  1012: "the server is restarting",
  1013: "the server is busy",
  4408: "the server closed an idle connection",
  4503: "the server's storage is unavailable",
};

export interface CloseContext {
  /** The code of the server's last `error` message on this connection. */
  errorCode: string | null;
  /** The server's last error message (kept next to the plain explanation). */
  errorMessage: string | null;
  /** This client sent `finish` on some connection, or it resumes a stored upload. */
  mayBeFinished: boolean;
  /** The caller can ask the API whether the track is already finished. */
  canConfirm: boolean;
}

export type CloseDecision =
  /** Try again after a backoff; `message` says why the connection went. */
  | { action: "retry"; message: string }
  /** Ask whether the server holds the whole track as finished before deciding. */
  | { action: "confirm"; ifNot: CloseDecision & { action: "stop" } }
  /** Stop for good: "refused" (the server will not take it) or "error". */
  | { action: "stop"; kind: "refused" | "error"; message: string };

/** The decision for a connection closed with `code`. */
export function decideClose(code: number, reason: string, ctx: CloseContext): CloseDecision {
  if (code in FATAL_CLOSE) {
    const stop = {
      action: "stop" as const,
      // Another connection that took this upload over is no refusal (a later load may resume it).
      kind: code === 4409 && ctx.errorCode === "superseded" ? ("error" as const) : ("refused" as const),
      message: describeFatal(code, ctx),
    };
    // Our first `finish` may have landed and only its answer got lost; or, when resuming,
    // the page before the reload finished the track but had not yet deleted its copy.
    if (code === 4409 && ctx.mayBeFinished && ctx.canConfirm) return { action: "confirm", ifNot: stop };
    return stop;
  }
  const why = TRANSIENT[code] ?? `code ${code}${reason ? `, ${reason}` : ""}`;
  return {
    action: "retry",
    message: `Connection lost: ${why}. Retrying; this tab keeps the recording until the server confirms it.`,
  };
}

function describeFatal(code: number, ctx: CloseContext): string {
  const plain =
    (code === 4409 && ctx.errorCode ? CONFLICT[ctx.errorCode] : undefined) ??
    FATAL_CLOSE[code] ??
    `The connection was closed (code ${code}).`;
  return ctx.errorMessage && ctx.errorMessage !== plain ? `${plain} (${ctx.errorMessage})` : plain;
}

export interface BackoffOptions {
  /** First delay; doubles with every failed attempt. */
  initialBackoffMs: number;
  /** Largest delay before jitter. */
  maxBackoffMs: number;
}

/**
 * Delay before reconnect attempt number `attempt` (0 for the first): exponential up to
 * the maximum, with "equal jitter" (between half and all of it) so that many clients
 * dropped at once do not come back at once. `random` returns a number in [0, 1).
 */
export function reconnectDelay(attempt: number, opts: BackoffOptions, random: () => number = Math.random): number {
  const base = Math.min(opts.maxBackoffMs, opts.initialBackoffMs * 2 ** Math.max(0, attempt));
  return base / 2 + random() * (base / 2);
}
