// The ingest wire protocol (docs/protocol.md): messages and URLs, no I/O.

import type { TrackName } from "./types.js";

export type ServerMessage =
  | { type: "ready"; sessionId?: string; track?: string; committed: number }
  | { type: "ack"; committed: number }
  | { type: "finished"; committed: number }
  | { type: "error"; code?: string; message?: string };

/** A server text message, or null for anything else. */
export function parseMessage(data: unknown): ServerMessage | null {
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

export function startMessage(mimeType: string, startedAt: number | null): string {
  return JSON.stringify({ type: "start", mimeType, startedAt });
}

export const FINISH_MESSAGE = JSON.stringify({ type: "finish" });

/** The socket URL with the session and its upload token. */
export function socketUrl(base: string, sessionId: string, uploadToken: string): string {
  const query = new URLSearchParams({ session: sessionId, token: uploadToken });
  return `${base}?${query.toString()}`;
}

/** ws(s)://host/ws/{track} for a server given as http(s)://host (a path prefix is kept). */
export function trackUrl(server: string, track: TrackName): string {
  const base = server.replace(/\/+$/, "").replace(/^http(s?):/i, "ws$1:");
  return `${base}/ws/${track}`;
}
