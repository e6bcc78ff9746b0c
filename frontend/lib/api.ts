// Same-origin HTTP API client (docs: SPEC §5). No React in here.

import type { TrackName } from "@tapedeck/recorder";

export type SessionState =
  | "recording"
  | "recorded"
  | "queued"
  | "compiling"
  | "ready"
  | "failed"
  | "expired";

export interface TrackInfo {
  name: TrackName | string;
  bytes: number;
  mimeType: string | null;
  startedAt: number | null;
  finished: boolean;
}

export interface OutputInfo {
  size: number;
  durationSeconds: number | null;
  videoCodec: string | null;
  audioCodec: string | null;
}

/** What the compile made beside the MP4: signed URLs, null until made. */
export interface MediaInfo {
  posterUrl: string | null;
  storyboardUrl: string | null;
  hlsUrl: string | null;
}

export interface Session {
  id: string;
  title: string;
  state: SessionState;
  createdAt: string;
  expiresAt: string | null;
  /** When storage last changed it (each extra that lands after `ready` changes it). */
  updatedAt?: string;
  bytes: number;
  durationSeconds: number | null;
  progress: number;
  error: string | null;
  tracks: TrackInfo[];
  output: OutputInfo | null;
  downloadUrl: string | null;
  media?: MediaInfo;
}

export interface SessionPage {
  items: Session[];
  nextCursor: string | null;
}

export interface NewSession {
  id: string;
  uploadToken: string;
  createdAt: string;
  expiresAt: string;
}

/** An API failure, with a message meant for people. */
export class ApiError extends Error {
  constructor(
    message: string,
    readonly status: number,
    readonly code: string | null,
  ) {
    super(message);
    this.name = "ApiError";
  }
}

// When the server runs with TAPEDECK_API_TOKEN, every /api call needs a bearer
// token. The page asks for it once and keeps it in this tab's localStorage.
const TOKEN_KEY = "tapedeck.apiToken";

export function getApiToken(): string | null {
  try {
    return window.localStorage.getItem(TOKEN_KEY);
  } catch {
    return null;
  }
}

export function setApiToken(token: string | null): void {
  try {
    if (token) window.localStorage.setItem(TOKEN_KEY, token);
    else window.localStorage.removeItem(TOKEN_KEY);
  } catch {
    // storage unavailable (private mode): the token lasts for this call only
  }
}

function plainStatus(status: number): string {
  switch (status) {
    case 400:
      return "The server did not accept the request.";
    case 401:
    case 403:
      return "The server needs an access token.";
    case 404:
      return "That recording no longer exists.";
    case 409:
      return "That can't be done in the recording's current state.";
    case 413:
      return "That is too large for the server.";
    case 503:
      return "The server is busy or its storage is unavailable; try again shortly.";
    case 507:
      return "The server's storage is full.";
    default:
      return status >= 500 ? "The server ran into a problem." : `The request failed (HTTP ${status}).`;
  }
}

async function request<T>(path: string, init: RequestInit = {}): Promise<T> {
  const headers = new Headers(init.headers);
  headers.set("Accept", "application/json");
  const token = getApiToken();
  if (token) headers.set("Authorization", `Bearer ${token}`);
  let res: Response;
  try {
    res = await fetch(path, { ...init, headers, cache: "no-store" });
  } catch {
    throw new ApiError("Could not reach the server. Check the connection and try again.", 0, null);
  }
  if (res.status === 204) return undefined as T;
  let body: unknown = null;
  const text = await res.text();
  if (text) {
    try {
      body = JSON.parse(text);
    } catch {
      body = null;
    }
  }
  if (!res.ok) {
    const err = (body as { error?: { code?: string; message?: string } } | null)?.error;
    const message = err?.message?.trim() || plainStatus(res.status);
    throw new ApiError(message, res.status, err?.code ?? null);
  }
  return body as T;
}

const enc = encodeURIComponent;

export function createSession(): Promise<NewSession> {
  return request<NewSession>("/api/sessions", {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: "{}",
  });
}

export function listSessions(limit = 50, cursor?: string | null, search?: string): Promise<SessionPage> {
  const q = new URLSearchParams({ limit: String(limit) });
  if (cursor) q.set("cursor", cursor);
  if (search?.trim()) q.set("q", search.trim());
  return request<SessionPage>(`/api/sessions?${q.toString()}`);
}

export function getSession(id: string): Promise<Session> {
  return request<Session>(`/api/sessions/${enc(id)}`);
}

export async function compileSession(id: string): Promise<{ state: SessionState }> {
  try {
    return await request<{ state: SessionState }>(`/api/compile-video/${enc(id)}`, { method: "POST" });
  } catch (e) {
    if (e instanceof ApiError && e.status === 409) {
      const plain: Record<string, string> = {
        "still-recording":
          "This recording is still being uploaded, so it can't be compiled yet. Stop recording, wait for the upload to finish, then try again.",
        empty: "Nothing was recorded in this session, so there is nothing to compile.",
        expired: "This recording has expired.",
      };
      const known = e.code ? plain[e.code] : undefined;
      throw new ApiError(known ?? e.message, 409, e.code);
    }
    throw e;
  }
}

export function renameSession(id: string, title: string): Promise<Session> {
  return request<Session>(`/api/sessions/${enc(id)}`, {
    method: "PATCH",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ title }),
  });
}

export function deleteSession(id: string): Promise<void> {
  return request<void>(`/api/sessions/${enc(id)}`, { method: "DELETE" });
}

export function downloadHref(session: Pick<Session, "id" | "downloadUrl">): string {
  return session.downloadUrl || `/api/download/${enc(session.id)}`;
}
