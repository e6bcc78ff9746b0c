import { describe, expect, it } from "vitest";
import type { Session } from "./api";
import { EXTRAS_WINDOW_MS, awaitingExtras, mergeSession, nextSource, urlKey } from "./media";

const NOW = Date.parse("2026-12-05T05:00:00Z");

function session(over: Partial<Session> = {}): Session {
  return {
    id: "0c136489-c0ad-4ddb-856c-adf166df948c",
    title: "t",
    state: "ready",
    createdAt: "2026-12-05T04:50:00Z",
    expiresAt: null,
    updatedAt: new Date(NOW - 1_000).toISOString(),
    bytes: 10,
    durationSeconds: 4,
    progress: 1,
    error: null,
    tracks: [],
    output: { size: 10, durationSeconds: 4, videoCodec: "h264", audioCodec: "aac" },
    downloadUrl: "/api/download/s?exp=100&sig=a",
    media: { posterUrl: null, storyboardUrl: null, hlsUrl: null },
    ...over,
  };
}

const ALL = {
  posterUrl: "/api/sessions/s/poster.jpg?exp=100&sig=a&v=p1",
  storyboardUrl: "/api/sessions/s/storyboard.vtt?exp=100&sig=a&v=s1",
  hlsUrl: "/api/sessions/s/hls/hls.m3u8?exp=100&sig=a&v=h1",
};

describe("extras that follow ready", () => {
  it("are awaited for a while after the session last changed, and only while some are missing", () => {
    expect(awaitingExtras(session(), NOW)).toBe(true);
    expect(awaitingExtras(session({ media: { ...ALL, hlsUrl: null } }), NOW)).toBe(true);
    expect(awaitingExtras(session({ media: ALL }), NOW)).toBe(false);
    expect(awaitingExtras(session({ media: undefined }), NOW)).toBe(true);
    // Audio only, or short without HLS: nothing more comes; polling ends with the window.
    const quiet = new Date(NOW - EXTRAS_WINDOW_MS - 1).toISOString();
    expect(awaitingExtras(session({ updatedAt: quiet }), NOW)).toBe(false);
    expect(awaitingExtras(session({ updatedAt: undefined }), NOW)).toBe(false);
    for (const state of ["compiling", "failed", "recording"] as const) {
      expect(awaitingExtras(session({ state }), NOW)).toBe(false);
    }
  });

  it("keep the URL strings the page has when only the signature changed", () => {
    const old = session({ media: { ...ALL, hlsUrl: null } });
    const renewed = (url: string) => url.replace("exp=100&sig=a", "exp=200&sig=b");
    const fresh = session({
      downloadUrl: renewed(old.downloadUrl!),
      media: {
        posterUrl: renewed(ALL.posterUrl),
        storyboardUrl: renewed(ALL.storyboardUrl).replace("v=s1", "v=s2"),
        hlsUrl: renewed(ALL.hlsUrl),
      },
      progress: 1,
    });
    const merged = mergeSession(old, fresh);
    expect(merged.downloadUrl).toBe(old.downloadUrl);
    expect(merged.media?.posterUrl).toBe(ALL.posterUrl);
    expect(merged.media?.storyboardUrl).toBe(fresh.media?.storyboardUrl); // other bytes (v)
    expect(merged.media?.hlsUrl).toBe(fresh.media?.hlsUrl); // new
    expect(mergeSession(old, session({ media: undefined })).media).toEqual(old.media);
  });

  it("name a URL without its signature", () => {
    expect(urlKey("/a/poster.jpg?exp=1&sig=x&v=e")).toBe("/a/poster.jpg?v=e");
    expect(urlKey("/api/download/s?exp=1&sig=x")).toBe("/api/download/s");
    expect(urlKey("/api/download/s")).toBe("/api/download/s");
    expect(urlKey(null)).toBeNull();
  });

  it("switch the player to HLS only before playback started", () => {
    const mp4 = { src: "/api/download/s", hlsUrl: null };
    const hls = { src: "/api/download/s", hlsUrl: "/api/sessions/s/hls/hls.m3u8?v=h" };
    expect(nextSource(mp4, hls, false)).toBe(hls);
    expect(nextSource(mp4, hls, true)).toBe(mp4);
    expect(nextSource(mp4, { ...mp4 }, false)).toBe(mp4);
  });
});
