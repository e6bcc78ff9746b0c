// `record()`: capture (or take) a stream, record one MediaRecorder per track, and upload
// each track with a TrackUploader. Framework-free; the host page listens to events.

import { Emitter } from "./events.js";
import { lockSession, type Release } from "./locks.js";
import {
  AUDIO_MIME_CANDIDATES,
  VIDEO_MIME_CANDIDATES,
  captureCamera,
  captureMicrophone,
  captureScreen,
  describeCaptureError,
  pickMimeType,
  stopStream,
} from "./media.js";
import { trackUrl } from "./protocol.js";
import { IndexedDBChunkStore, type ChunkStore } from "./store.js";
import type { TrackName, UploadStats } from "./types.js";
import { TrackUploader, type SocketFactory } from "./uploader.js";

export type RecordingState =
  /** Capturing the source, taking the session's lock, opening the store. */
  | "starting"
  | "recording"
  /** stop() was called; the recorders hand over their last data. */
  | "stopping"
  /** The recorders stopped (the source can be released); uploads finish. */
  | "uploading"
  /** Every track is uploaded, refused or failed: see `finished`. */
  | "finished"
  /** The recording could not start (see the `error` event). */
  | "failed";

export interface StateEvent {
  state: RecordingState;
  /** The visual track's recorder start, epoch ms (null before it started). */
  startedAt: number | null;
  /** What each recorder reports it produces, once it started. */
  mimeTypes: Partial<Record<TrackName, string>>;
}

export interface RecordingError {
  message: string;
  /** The track concerned, if one. */
  track?: TrackName;
}

export interface RecordingResult {
  sessionId: string;
  /** Every track uploaded (the server confirmed every byte). */
  ok: boolean;
  tracks: UploadStats[];
}

export interface RecorderEvents {
  state: StateEvent;
  /** A track's upload moved (bytes recorded, sent, acknowledged; its state). */
  progress: UploadStats;
  error: RecordingError;
  finished: RecordingResult;
}

export interface RecordOptions {
  /** The Tapedeck server, e.g. "https://tapedeck.example.com" (WebSockets go to /ws/{track}). */
  server: string;
  sessionId: string;
  uploadToken: string;
  /** Camera + microphone, screen + microphone, or a stream the page captured itself. */
  source: "camera" | "screen" | MediaStream;
  /** For a MediaStream source: the name of its video track on the server. Default "video". */
  visualTrack?: "video" | "screen";
  /** The socket URL of a track, if not `server`'s /ws/{track}. */
  socketUrl?: (track: TrackName) => string;
  videoMimeType?: string;
  audioMimeType?: string;
  /** Device ids for "camera" (default devices otherwise). */
  cameraId?: string;
  microphoneId?: string;
  /** Where chunks are kept across reloads. Default: IndexedDB; null: memory only. */
  store?: ChunkStore | null;
  memoryBudgetBytes?: number;
  /** Whether the server holds a track as finished (see UploaderOptions). Default: GET /api/sessions/{id}. */
  confirmFinished?: (track: TrackName, bytes: number) => Promise<boolean>;
  /** Hold the session's Web Lock while uploading (one tab per session). Default true. */
  lock?: boolean;
  /** MediaRecorder timeslice. Default 1000 ms. */
  timesliceMs?: number;
  /** Opens the WebSockets (tests). */
  socket?: SocketFactory;
}

export interface Recording {
  readonly sessionId: string;
  /** The stream being recorded (null until captured). */
  readonly stream: MediaStream | null;
  /** The upload of each track, once started: save or discard its local copy through it. */
  readonly uploaders: Partial<Record<TrackName, TrackUploader>>;
  /** Resolves once recording runs; rejects (with a readable message) if it cannot start. */
  readonly started: Promise<void>;
  /** Resolves once every track is uploaded, refused or failed (never rejects). */
  readonly finished: Promise<RecordingResult>;
  on<K extends keyof RecorderEvents>(event: K, listener: (value: RecorderEvents[K]) => void): () => void;
  /** Stop recording; the uploads finish. Resolves like `finished`. */
  stop(): Promise<RecordingResult>;
}

/** An event's time as epoch ms (event timestamps count from the page's time origin). */
function eventTime(ev: Event): number {
  const ts = ev.timeStamp;
  return typeof performance !== "undefined" && ts > 0 && Number.isFinite(performance.timeOrigin)
    ? performance.timeOrigin + ts
    : Date.now();
}

async function defaultConfirm(server: string, sessionId: string, track: TrackName, bytes: number): Promise<boolean> {
  const res = await fetch(`${server.replace(/\/+$/, "")}/api/sessions/${encodeURIComponent(sessionId)}`, {
    headers: { Accept: "application/json" },
  });
  if (!res.ok) return false;
  const body = (await res.json()) as { tracks?: Array<{ name: string; finished: boolean; bytes: number }> };
  const t = body.tracks?.find((x) => x.name === track);
  return !!t && t.finished && t.bytes === bytes;
}

/**
 * Record and upload. Returns at once; listen to the handle's events (every event
 * after this call is delivered to listeners attached in the same tick).
 */
export function record(options: RecordOptions): Recording {
  const events = new Emitter<RecorderEvents>();
  const uploaders: Partial<Record<TrackName, TrackUploader>> = {};
  const recorders: MediaRecorder[] = [];
  const mimeTypes: Partial<Record<TrackName, string>> = {};
  let stream: MediaStream | null = null;
  let ownsStream = false;
  let state: RecordingState = "starting";
  let startedAt: number | null = null;
  let stopRequested = false;
  let release: Release = () => undefined;
  let resolveFinished!: (r: RecordingResult) => void;
  const finished = new Promise<RecordingResult>((resolve) => {
    resolveFinished = resolve;
  });

  const setState = (next: RecordingState) => {
    state = next;
    events.emit("state", { state, startedAt, mimeTypes: { ...mimeTypes } });
  };

  const stopRecorders = () => {
    for (const r of recorders) {
      if (r.state !== "inactive") {
        try {
          r.stop();
        } catch {
          // already stopped
        }
      }
    }
  };

  const stop = (): Promise<RecordingResult> => {
    stopRequested = true;
    if (state === "recording") {
      setState("stopping");
      stopRecorders();
    }
    return finished;
  };

  const begin = async (): Promise<void> => {
    // 1. The stream.
    const source = options.source;
    const visualTrack: TrackName = source === "screen" ? "screen" : source === "camera" ? "video" : options.visualTrack ?? "video";
    if (typeof source === "string") {
      ownsStream = true;
      const acquired: MediaStream[] = [];
      try {
        acquired.push(source === "screen" ? await captureScreen() : await captureCamera(options.cameraId ?? ""));
      } catch (e) {
        throw new Error(describeCaptureError(e, source));
      }
      try {
        acquired.push(await captureMicrophone(options.microphoneId ?? ""));
      } catch (e) {
        acquired.forEach(stopStream);
        throw new Error(describeCaptureError(e, "microphone"));
      }
      stream = new MediaStream([...acquired[0].getVideoTracks(), ...acquired[1].getAudioTracks()]);
    } else {
      stream = source;
    }

    // 2. This tab owns the session's upload; every chunk goes to the store before it is sent.
    if (options.lock !== false) {
      try {
        release = await lockSession(options.sessionId);
      } catch {
        // no coordination available: upload anyway
      }
    }
    const store = options.store !== undefined ? options.store : await IndexedDBChunkStore.open();

    // 3. One recorder and one uploader per track.
    type Pair = { track: TrackName; tracks: MediaStreamTrack[]; mime: string };
    const all: Pair[] = [
      {
        track: visualTrack,
        tracks: stream.getVideoTracks(),
        mime: options.videoMimeType ?? pickMimeType(VIDEO_MIME_CANDIDATES),
      },
      { track: "audio", tracks: stream.getAudioTracks(), mime: options.audioMimeType ?? pickMimeType(AUDIO_MIME_CANDIDATES) },
    ];
    const pairs = all.filter((p) => p.tracks.length > 0);
    if (pairs.length === 0) throw new Error("The stream has no audio or video track to record.");
    const confirmFinished =
      options.confirmFinished ??
      ((track: TrackName, bytes: number) => defaultConfirm(options.server, options.sessionId, track, bytes));
    let stopped = 0;

    const onAllStopped = () => {
      if (ownsStream) stopStream(stream);
      setState("uploading");
      void Promise.all(Object.values(uploaders).map((u) => (u as TrackUploader).whenSettled)).then((tracks) => {
        release();
        const result: RecordingResult = {
          sessionId: options.sessionId,
          ok: tracks.every((t) => t.state === "uploaded"),
          tracks,
        };
        setState("finished");
        events.emit("finished", result);
        resolveFinished(result);
      });
    };

    try {
      for (const { track, tracks, mime } of pairs) {
        const media = new MediaStream(tracks);
        let recorder: MediaRecorder;
        try {
          recorder = new MediaRecorder(media, mime ? { mimeType: mime } : undefined);
        } catch {
          recorder = new MediaRecorder(media); // let the browser choose
        }
        const uploader = new TrackUploader({
          track,
          sessionId: options.sessionId,
          uploadToken: options.uploadToken,
          mimeType: mime || recorder.mimeType,
          url: options.socketUrl ? options.socketUrl(track) : trackUrl(options.server, track),
          confirmFinished,
          store,
          memoryBudgetBytes: options.memoryBudgetBytes,
          socket: options.socket,
        });
        uploader.subscribe((s) => events.emit("progress", s));
        recorder.addEventListener("start", (ev) => {
          const at = eventTime(ev);
          // Chromium reports its own spelling (video/x-matroska;codecs=avc1) of the type
          // asked for (video/webm;codecs=h264); the server is told the one asked for.
          const reported = recorder.mimeType;
          mimeTypes[track] = reported;
          if (track !== "audio" || startedAt === null) startedAt = at;
          uploader.start(at, mime || reported);
          events.emit("state", { state, startedAt, mimeTypes: { ...mimeTypes } });
        });
        recorder.addEventListener("dataavailable", (ev) => {
          if (ev.data && ev.data.size > 0) uploader.push(ev.data, eventTime(ev));
        });
        recorder.addEventListener("stop", () => {
          // The last dataavailable has fired before stop.
          void uploader.finish();
          stopped += 1;
          if (stopped === recorders.length) onAllStopped();
        });
        recorder.addEventListener("error", (ev) => {
          const err = (ev as Event & { error?: DOMException }).error;
          events.emit("error", {
            track,
            message: `The ${track} recorder failed${err?.message ? `: ${err.message}` : "."} Recording stopped.`,
          });
          void stop();
        });
        recorders.push(recorder);
        uploaders[track] = uploader;
      }
      for (const r of recorders) r.start(options.timesliceMs ?? 1000);
    } catch (e) {
      Object.values(uploaders).forEach((u) => u?.abort());
      stopRecorders();
      throw new Error(`The browser could not record: ${e instanceof Error ? e.message : String(e)}`);
    }
    // Ending the screen share from the browser's own UI stops the recording.
    for (const t of stream.getVideoTracks()) t.addEventListener("ended", () => void stop());
    setState("recording");
    if (stopRequested) void stop();
  };

  const started = Promise.resolve()
    .then(begin)
    .catch((e: unknown) => {
      const message = e instanceof Error ? e.message : String(e);
      if (ownsStream) stopStream(stream);
      release();
      setState("failed");
      events.emit("error", { message });
      const result: RecordingResult = { sessionId: options.sessionId, ok: false, tracks: [] };
      events.emit("finished", result);
      resolveFinished(result);
      throw e instanceof Error ? e : new Error(message);
    });
  // Callers that only listen to events must not see an unhandled rejection.
  started.catch(() => undefined);

  return {
    sessionId: options.sessionId,
    get stream() {
      return stream;
    },
    uploaders,
    started,
    finished,
    on: (event, listener) => events.on(event, listener),
    stop,
  };
}
