"use client";

// The recording's state for the page: a reducer over @tapedeck/recorder's events (the
// package records and uploads; this only keeps what the page shows).

import { useCallback, useEffect, useReducer, useRef } from "react";
import { record, type Recording, type TrackName, type TrackUploader } from "@tapedeck/recorder";
import { ApiError, createSession, getSession } from "@/lib/api";
import { trackSocketUrl } from "@/lib/config";
import { INITIAL, reduce } from "./recordingView";

export type { Phase, RecordingView } from "./recordingView";

/** Optional override of the uploader's memory budget (localStorage `tapedeck.memoryBudgetBytes`). */
function memoryBudget(): number | undefined {
  try {
    const v = Number(window.localStorage.getItem("tapedeck.memoryBudgetBytes"));
    return Number.isFinite(v) && v > 0 ? v : undefined;
  } catch {
    return undefined;
  }
}

export interface StartOptions {
  /** The captured stream: its video track and its audio track become two uploads. */
  stream: MediaStream;
  visualTrack: "video" | "screen";
  videoMimeType: string;
  audioMimeType: string;
  /** Every recorder stopped: the page releases its devices. */
  onRecordersStopped: () => void;
}

interface Callbacks {
  onSessionsChanged: () => void;
  onUnauthorized: () => void;
}

export function useRecording({ onSessionsChanged, onUnauthorized }: Callbacks) {
  const [view, dispatch] = useReducer(reduce, INITIAL);
  const current = useRef<Recording | null>(null);
  const callbacks = useRef<Callbacks>({ onSessionsChanged, onUnauthorized });
  callbacks.current = { onSessionsChanged, onUnauthorized };

  /** The uploads of the current (or last) recording: save or discard a kept copy. */
  const uploader = useCallback(
    (track: TrackName): TrackUploader | undefined => current.current?.uploaders[track],
    [],
  );

  const starting = useCallback(() => dispatch({ type: "starting" }), []);
  const fail = useCallback((message: string) => dispatch({ type: "failed", message }), []);
  const setError = useCallback((message: string | null) => dispatch({ type: "error", message }), []);

  /** Create the session and record `stream` into it; false (with an error shown) if it could not start. */
  const start = useCallback(async (opts: StartOptions): Promise<boolean> => {
    let session;
    try {
      session = await createSession();
    } catch (e) {
      if (e instanceof ApiError && e.status === 401) callbacks.current.onUnauthorized();
      dispatch({
        type: "failed",
        message: `Could not start a recording on the server. ${e instanceof Error ? e.message : ""}`.trim(),
      });
      return false;
    }
    dispatch({ type: "session", sessionId: session.id });
    callbacks.current.onSessionsChanged();
    const rec = record({
      server: window.location.origin,
      sessionId: session.id,
      uploadToken: session.uploadToken,
      source: opts.stream,
      visualTrack: opts.visualTrack,
      socketUrl: trackSocketUrl,
      videoMimeType: opts.videoMimeType,
      audioMimeType: opts.audioMimeType,
      memoryBudgetBytes: memoryBudget(),
      confirmFinished: async (track, bytes) => {
        const s = await getSession(session.id);
        const t = s.tracks.find((x) => x.name === track);
        return !!t && t.finished && t.bytes === bytes;
      },
    });
    current.current = rec;
    rec.on("state", (event) => {
      if (event.state === "uploading") opts.onRecordersStopped();
      if (event.state !== "failed" && event.state !== "finished") dispatch({ type: "state", event });
    });
    rec.on("progress", (stats) => dispatch({ type: "progress", stats }));
    rec.on("error", (e) => dispatch({ type: "error", message: e.message }));
    rec.on("finished", (result) => {
      if (result.tracks.length === 0) return; // it never started: `started` reports why
      dispatch({ type: "finished", result });
      callbacks.current.onSessionsChanged();
    });
    try {
      await rec.started;
      return true;
    } catch (e) {
      dispatch({ type: "failed", message: e instanceof Error ? e.message : String(e) });
      return false;
    }
  }, []);

  // The package stops only a running recording, so this is safe to call at any time.
  const stop = useCallback(() => void current.current?.stop(), []);

  // Leaving the page (or unmounting) stops the recorders; the stored copy stays.
  useEffect(() => () => void current.current?.stop(), []);

  return { view, start, stop, starting, fail, setError, uploader };
}
