// What the page does while a `ready` session's extras (poster, storyboard, HLS) land: they
// follow the MP4 by seconds (docs/decisions.md, "Ready first"). Pure: no React, no fetch.

import type { MediaInfo, Session } from "./api";

/** How long after a ready session's last change the page keeps looking for more extras.
 * Each extra that lands changes the session, so this is the quiet time after the last one;
 * a session that never gets some (audio only: no poster; short: no HLS) stops being polled
 * then, and a later view (a reload) shows whatever came after. */
export const EXTRAS_WINDOW_MS = 60_000;

const MEDIA_KEYS = ["posterUrl", "storyboardUrl", "hlsUrl"] as const;

/** A ready session some of whose extras may still come. */
export function awaitingExtras(session: Session, nowMs: number): boolean {
  if (session.state !== "ready") return false;
  const media = session.media;
  if (media && MEDIA_KEYS.every((key) => media[key])) return false;
  const updated = Date.parse(session.updatedAt ?? "");
  return Number.isFinite(updated) && nowMs - updated < EXTRAS_WINDOW_MS;
}

/** A signed URL without its signature (`exp`, `sig`), which the api renews on every answer:
 * two URLs with the same key name the same bytes (the `v` parameter is the ETag). */
export function urlKey(url: string | null | undefined): string | null {
  if (!url) return null;
  const [path, query = ""] = url.split("?", 2);
  const kept = query
    .split("&")
    .filter((part) => part && !part.startsWith("exp=") && !part.startsWith("sig="));
  return kept.length ? `${path}?${kept.join("&")}` : path;
}

function keep(old: string | null | undefined, fresh: string | null | undefined) {
  return old && urlKey(old) === urlKey(fresh) ? old : fresh;
}

/** `fresh` as the page shows it: URLs that name what `old` already names keep `old`'s string,
 * so a poll re-renders no `<img>` or `<video>` (a new signature would reload them). */
export function mergeSession(old: Session, fresh: Session): Session {
  const merged: Session = { ...old, ...fresh };
  merged.downloadUrl = keep(old.downloadUrl, fresh.downloadUrl) ?? null;
  if (fresh.media) {
    const media: MediaInfo = { ...fresh.media };
    for (const key of MEDIA_KEYS) media[key] = keep(old.media?.[key], fresh.media[key]) ?? null;
    merged.media = media;
  } else {
    merged.media = old.media;
  }
  return merged;
}

export interface Source {
  src: string;
  hlsUrl: string | null;
}

/** What the player plays. An HLS playlist that lands after the MP4 started playing waits for
 * the next view: switching then would interrupt the user. Before that, the newest wins. */
export function nextSource(current: Source, wanted: Source, started: boolean): Source {
  if (current.src === wanted.src && current.hlsUrl === wanted.hlsUrl) return current;
  return started ? current : wanted;
}
