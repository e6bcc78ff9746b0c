"use client";

import { useEffect, useRef, useState } from "react";
import { nextSource, type Source } from "@/lib/media";

interface Cue {
  start: number;
  end: number;
  url: string;
  x: number;
  y: number;
  w: number;
  h: number;
}

/** The storyboard's WebVTT index: `start --> end` then `sprite#xywh=x,y,w,h`. */
export function parseStoryboard(text: string, base: string): Cue[] {
  const seconds = (t: string) => {
    const parts = t.trim().split(":").map(Number);
    return parts.reduce((acc, p) => acc * 60 + p, 0);
  };
  const cues: Cue[] = [];
  const blocks = text.replace(/\r/g, "").split("\n\n");
  for (const block of blocks) {
    const lines = block.split("\n").filter(Boolean);
    const timing = lines.findIndex((l) => l.includes("-->"));
    if (timing < 0 || !lines[timing + 1]) continue;
    const [a, b] = lines[timing].split("-->");
    const [ref, frag] = lines[timing + 1].split("#xywh=");
    if (!frag) continue;
    const [x, y, w, h] = frag.split(",").map(Number);
    cues.push({ start: seconds(a), end: seconds(b), url: new URL(ref, base).toString(), x, y, w, h });
  }
  return cues;
}

interface Props {
  src: string;
  hlsUrl?: string | null;
  posterUrl?: string | null;
  storyboardUrl?: string | null;
  label: string;
}

/** The recording's player: HLS where there is one (hls.js, else natively), so a long
 * recording starts at once and seeks without downloading; the MP4 otherwise. The seek bar
 * under it previews frames from the storyboard. The poster, storyboard and HLS may come
 * seconds after the MP4 (the session is `ready` first): each is taken up as it arrives,
 * except a playlist arriving once playback started (`nextSource`). */
export function Player({ src, hlsUrl, posterUrl, storyboardUrl, label }: Props) {
  const video = useRef<HTMLVideoElement>(null);
  const [playback, setPlayback] = useState<"mp4" | "hls" | "hls.js">("mp4");
  const [duration, setDuration] = useState(0);
  const [time, setTime] = useState(0);
  const [cues, setCues] = useState<Cue[]>([]);
  const [preview, setPreview] = useState<{ cue: Cue; left: number } | null>(null);
  const [source, setSource] = useState<Source>({ src, hlsUrl: hlsUrl ?? null });

  useEffect(() => {
    const el = video.current;
    const started = el !== null && (el.currentTime > 0 || !el.paused);
    setSource((current) => nextSource(current, { src, hlsUrl: hlsUrl ?? null }, started));
  }, [src, hlsUrl]);

  useEffect(() => {
    const el = video.current;
    if (!el) return;
    const { src, hlsUrl } = source;
    let destroy: (() => void) | null = null;
    let cancelled = false;
    if (!hlsUrl) {
      el.src = src;
      setPlayback("mp4");
    } else {
      // hls.js wherever Media Source Extensions exist (the same player everywhere, and the
      // one the browser suite runs); the browser's own HLS where they do not (iOS); the MP4
      // when neither.
      void import("hls.js").then(({ default: Hls }) => {
        if (cancelled) return;
        if (Hls.isSupported()) {
          const hls = new Hls();
          hls.loadSource(new URL(hlsUrl, window.location.href).toString());
          hls.attachMedia(el);
          setPlayback("hls.js");
          destroy = () => hls.destroy();
        } else if (el.canPlayType("application/vnd.apple.mpegurl")) {
          el.src = hlsUrl;
          setPlayback("hls");
        } else {
          el.src = src;
          setPlayback("mp4");
        }
      });
    }
    return () => {
      cancelled = true;
      destroy?.();
    };
  }, [source]);

  useEffect(() => {
    if (!storyboardUrl) return;
    let cancelled = false;
    const url = new URL(storyboardUrl, window.location.href).toString();
    fetch(url)
      .then((res) => (res.ok ? res.text() : ""))
      .then((text) => {
        if (!cancelled && text) setCues(parseStoryboard(text, url));
      })
      .catch(() => undefined);
    return () => {
      cancelled = true;
    };
  }, [storyboardUrl]);

  const hover = (e: React.PointerEvent<HTMLInputElement>) => {
    if (!cues.length || !duration) return;
    const box = e.currentTarget.getBoundingClientRect();
    const fraction = Math.min(1, Math.max(0, (e.clientX - box.left) / box.width));
    const at = fraction * duration;
    const cue = cues.find((c) => at >= c.start && at < c.end) ?? cues[cues.length - 1];
    setPreview({ cue, left: fraction * box.width });
  };

  return (
    <div className="player-wrap">
      <video
        ref={video}
        className="player"
        controls
        preload="metadata"
        poster={posterUrl ?? undefined}
        aria-label={label}
        data-playback={playback}
        onLoadedMetadata={(e) => setDuration(e.currentTarget.duration || 0)}
        onDurationChange={(e) => setDuration(e.currentTarget.duration || 0)}
        onTimeUpdate={(e) => setTime(e.currentTarget.currentTime)}
      />
      {duration > 0 && Number.isFinite(duration) ? (
        <div className="seek">
          <input
            type="range"
            className="seek-bar"
            min={0}
            max={duration}
            step={0.1}
            value={Math.min(time, duration)}
            aria-label="Seek with previews"
            aria-valuetext={`${Math.round(time)} of ${Math.round(duration)} seconds`}
            onChange={(e) => {
              const at = Number(e.currentTarget.value);
              setTime(at); // the bar follows the hand at once, not the next timeupdate
              const el = video.current;
              if (el) el.currentTime = at;
            }}
            onPointerMove={hover}
            onPointerLeave={() => setPreview(null)}
          />
          {preview ? (
            <div
              className="seek-preview"
              data-testid="seek-preview"
              aria-hidden="true"
              style={{
                left: preview.left,
                width: preview.cue.w,
                height: preview.cue.h,
                backgroundImage: `url("${preview.cue.url}")`,
                backgroundPosition: `-${preview.cue.x}px -${preview.cue.y}px`,
              }}
            />
          ) : null}
        </div>
      ) : null}
    </div>
  );
}
