// Where the browser talks to. API calls are always same-origin (`/api/...`).
// WebSocket endpoints are same-origin too unless a NEXT_PUBLIC_*_WS_URL was set
// at build time (the full URL up to and including the track path).

import type { TrackName } from "@tapedeck/recorder";

// These must be spelled out literally so Next inlines them at build time.
const VIDEO_WS_URL = process.env.NEXT_PUBLIC_VIDEO_WS_URL ?? "";
const AUDIO_WS_URL = process.env.NEXT_PUBLIC_AUDIO_WS_URL ?? "";
const SCREEN_WS_URL = process.env.NEXT_PUBLIC_SCREEN_WS_URL ?? "";

function sameOrigin(track: TrackName): string {
  const { protocol, host } = window.location;
  const scheme = protocol === "https:" ? "wss:" : "ws:";
  return `${scheme}//${host}/ws/${track}`;
}

function trimSlash(url: string): string {
  return url.replace(/\/+$/, "");
}

/** The WebSocket URL (without query string) for one track. */
export function trackSocketUrl(track: TrackName): string {
  switch (track) {
    case "video":
      return VIDEO_WS_URL ? trimSlash(VIDEO_WS_URL) : sameOrigin(track);
    case "audio":
      return AUDIO_WS_URL ? trimSlash(AUDIO_WS_URL) : sameOrigin(track);
    case "screen":
      if (SCREEN_WS_URL) return trimSlash(SCREEN_WS_URL);
      // The screen endpoint lives beside the video one.
      if (VIDEO_WS_URL) return trimSlash(VIDEO_WS_URL).replace(/\/video$/, "/screen");
      return sameOrigin(track);
  }
}
