"use client";

import { useCallback, useEffect, useRef, useState } from "react";
import { ApiError, createSession, getSession, type NewSession } from "@/lib/api";
import { trackSocketUrl } from "@/lib/config";
import { describeMime, formatDuration } from "@/lib/format";
import {
  AUDIO_MIME_CANDIDATES,
  VIDEO_MIME_CANDIDATES,
  canCaptureScreen,
  canRecord,
  captureCamera,
  captureMicrophone,
  captureScreen,
  describeCaptureError,
  listDevices,
  pickMimeType,
  stopStream,
  type CaptureMode,
  type DeviceLists,
} from "@/lib/media";
import { lockSession, type Release } from "@/lib/locks";
import { UploadStore } from "@/lib/persist";
import { TrackUploader, type TrackName, type UploadStats } from "@/lib/upload";
import { TrackStatus, type LocalCopy } from "./TrackStatus";
import { ErrorNotice } from "./ErrorNotice";

type Phase = "idle" | "starting" | "recording" | "stopping" | "done";

interface Props {
  /** Something about the list of sessions changed (created, uploaded). */
  onSessionsChanged: () => void;
  /** The API answered 401: ask for a token. */
  onUnauthorized: () => void;
}

interface Recording {
  sessionId: string;
  streams: MediaStream[];
  recorders: MediaRecorder[];
  uploaders: TrackUploader[];
}

/** An event's time as epoch ms (event timestamps count from the page's time origin). */
function eventTime(ev: Event): number {
  const ts = ev.timeStamp;
  return typeof performance !== "undefined" && ts > 0 && Number.isFinite(performance.timeOrigin)
    ? performance.timeOrigin + ts
    : Date.now();
}

/** Optional override of the uploader's memory budget (localStorage `tapedeck.memoryBudgetBytes`). */
function memoryBudget(): number | undefined {
  try {
    const v = Number(window.localStorage.getItem("tapedeck.memoryBudgetBytes"));
    return Number.isFinite(v) && v > 0 ? v : undefined;
  } catch {
    return undefined;
  }
}

export function Recorder({ onSessionsChanged, onUnauthorized }: Props) {
  const [supported, setSupported] = useState<boolean | null>(null);
  const [screenSupported, setScreenSupported] = useState(false);
  const [mode, setMode] = useState<CaptureMode>("camera");
  const [devices, setDevices] = useState<DeviceLists>({ cameras: [], microphones: [] });
  const [cameraId, setCameraId] = useState("");
  const [microphoneId, setMicrophoneId] = useState("");
  const [videoMime, setVideoMime] = useState("");
  const [audioMime, setAudioMime] = useState("");
  const [activeMimes, setActiveMimes] = useState<Partial<Record<TrackName, string>>>({});
  const [phase, setPhase] = useState<Phase>("idle");
  const [previewOn, setPreviewOn] = useState(false);
  const [error, setError] = useState<string | null>(null);
  const [sessionId, setSessionId] = useState<string | null>(null);
  const [stats, setStats] = useState<Partial<Record<TrackName, UploadStats>>>({});
  const [startedAt, setStartedAt] = useState<number | null>(null);
  const [now, setNow] = useState(0);
  const [announcement, setAnnouncement] = useState("");

  const videoRef = useRef<HTMLVideoElement>(null);
  const previewStream = useRef<MediaStream | null>(null);
  const recording = useRef<Recording | null>(null);
  // The last recording's uploaders, kept after it ends: a refused track's copy is
  // saved or discarded through them.
  const lastUploaders = useRef<Partial<Record<TrackName, TrackUploader>>>({});
  const phaseRef = useRef<Phase>("idle");
  phaseRef.current = phase;

  // ---- capabilities and devices ------------------------------------------

  const refreshDevices = useCallback(async () => {
    try {
      const lists = await listDevices();
      setDevices(lists);
      setCameraId((id) => (id && lists.cameras.some((c) => c.deviceId === id) ? id : lists.cameras[0]?.deviceId ?? ""));
      setMicrophoneId((id) =>
        id && lists.microphones.some((m) => m.deviceId === id) ? id : lists.microphones[0]?.deviceId ?? "",
      );
    } catch {
      // enumerateDevices failing leaves the "default device" choice
    }
  }, []);

  useEffect(() => {
    setSupported(canRecord());
    setScreenSupported(canCaptureScreen());
    setVideoMime(pickMimeType(VIDEO_MIME_CANDIDATES));
    setAudioMime(pickMimeType(AUDIO_MIME_CANDIDATES));
    void refreshDevices();
    const md = typeof navigator !== "undefined" ? navigator.mediaDevices : undefined;
    if (!md?.addEventListener) return;
    const onChange = () => void refreshDevices();
    md.addEventListener("devicechange", onChange);
    return () => md.removeEventListener("devicechange", onChange);
  }, [refreshDevices]);

  const showStream = useCallback((stream: MediaStream | null) => {
    const el = videoRef.current;
    if (!el) return;
    el.srcObject = stream;
    if (stream) el.play().catch(() => undefined);
  }, []);

  // ---- preview (camera mode, before recording) ----------------------------

  const stopPreview = useCallback(() => {
    stopStream(previewStream.current);
    previewStream.current = null;
    setPreviewOn(false);
    if (!recording.current) showStream(null);
  }, [showStream]);

  const startPreview = useCallback(
    async (id: string) => {
      setError(null);
      stopStream(previewStream.current);
      previewStream.current = null;
      try {
        const stream = await captureCamera(id);
        previewStream.current = stream;
        setPreviewOn(true);
        showStream(stream);
        void refreshDevices();
      } catch (e) {
        setPreviewOn(false);
        setError(describeCaptureError(e, "camera"));
      }
    },
    [refreshDevices, showStream],
  );

  // Switching camera while previewing follows the new choice.
  useEffect(() => {
    if (previewOn && phaseRef.current !== "recording" && phaseRef.current !== "starting") {
      const current = previewStream.current?.getVideoTracks()[0]?.getSettings().deviceId;
      if (cameraId && current !== cameraId) void startPreview(cameraId);
    }
  }, [cameraId]);

  useEffect(() => {
    if (mode === "screen" && previewOn) stopPreview();
  }, [mode]);

  // ---- recording ------------------------------------------------------------

  const stopRecording = useCallback(() => {
    const rec = recording.current;
    if (!rec || phaseRef.current !== "recording") return;
    setPhase("stopping");
    phaseRef.current = "stopping";
    for (const r of rec.recorders) {
      if (r.state !== "inactive") {
        try {
          r.stop();
        } catch {
          // already stopped
        }
      }
    }
  }, []);

  const startRecording = useCallback(async () => {
    if (phaseRef.current === "starting" || phaseRef.current === "recording" || phaseRef.current === "stopping") return;
    setError(null);
    setPhase("starting");
    phaseRef.current = "starting";
    setStats({});
    lastUploaders.current = {};
    setActiveMimes({});
    setStartedAt(null);

    const acquired: MediaStream[] = [];
    const giveUp = (message: string) => {
      acquired.forEach(stopStream);
      if (previewStream.current && !acquired.includes(previewStream.current)) showStream(previewStream.current);
      else showStream(null);
      setError(message);
      setPhase("idle");
      phaseRef.current = "idle";
    };

    // 1. Capture.
    let visual: MediaStream;
    const visualTrack: TrackName = mode === "screen" ? "screen" : "video";
    try {
      if (mode === "screen") {
        visual = await captureScreen();
      } else {
        const current = previewStream.current;
        const currentId = current?.getVideoTracks()[0]?.getSettings().deviceId;
        if (current && current.active && (!cameraId || currentId === cameraId)) {
          visual = current;
          previewStream.current = null; // now owned by the recording
          setPreviewOn(false);
        } else {
          stopPreview();
          visual = await captureCamera(cameraId);
        }
      }
      acquired.push(visual);
    } catch (e) {
      giveUp(describeCaptureError(e, mode === "screen" ? "screen" : "camera"));
      return;
    }
    let mic: MediaStream;
    try {
      mic = await captureMicrophone(microphoneId);
      acquired.push(mic);
    } catch (e) {
      giveUp(describeCaptureError(e, "microphone"));
      return;
    }
    void refreshDevices(); // labels become visible once permission is granted
    showStream(visual);

    // 2. Session.
    let session: NewSession;
    try {
      session = await createSession();
    } catch (e) {
      if (e instanceof ApiError && e.status === 401) onUnauthorized();
      giveUp(`Could not start a recording on the server. ${e instanceof Error ? e.message : ""}`.trim());
      return;
    }
    setSessionId(session.id);
    onSessionsChanged();

    // This tab owns the session's upload (a reload or another tab must not resume it
    // while this page lives), and every chunk goes to IndexedDB before it is sent.
    let release: Release = () => undefined;
    try {
      release = await lockSession(session.id);
    } catch {
      // no coordination available: upload anyway
    }
    const store = await UploadStore.open();
    const budget = memoryBudget();

    // 3. One recorder and one uploader per track.
    const pairs: Array<{ track: TrackName; stream: MediaStream; mime: string }> = [
      { track: visualTrack, stream: new MediaStream(visual.getVideoTracks()), mime: videoMime },
      { track: "audio", stream: new MediaStream(mic.getAudioTracks()), mime: audioMime },
    ];
    const rec: Recording = { sessionId: session.id, streams: acquired, recorders: [], uploaders: [] };
    let stopped = 0;

    const confirmFinished = async (track: TrackName, bytes: number) => {
      const s = await getSession(session.id);
      const t = s.tracks.find((x) => x.name === track);
      return !!t && t.finished && t.bytes === bytes;
    };

    const onAllStopped = () => {
      acquired.forEach(stopStream);
      showStream(null);
      void Promise.all(rec.uploaders.map((u) => u.whenSettled)).then((results) => {
        release();
        if (recording.current === rec) recording.current = null;
        setPhase("done");
        phaseRef.current = "done";
        const failed = results.filter((r) => r.state === "error" || r.state === "refused");
        setAnnouncement(
          failed.length
            ? `Upload failed for ${failed.map((r) => r.track).join(" and ")}. This browser keeps the recording: you can save it to this computer.`
            : "Recording uploaded. You can compile it below.",
        );
        onSessionsChanged();
      });
    };

    try {
      for (const { track, stream, mime } of pairs) {
        let recorder: MediaRecorder;
        try {
          recorder = new MediaRecorder(stream, mime ? { mimeType: mime } : undefined);
        } catch {
          recorder = new MediaRecorder(stream); // let the browser choose
        }
        const uploader = new TrackUploader({
          track,
          sessionId: session.id,
          uploadToken: session.uploadToken,
          mimeType: mime || recorder.mimeType,
          url: trackSocketUrl(track),
          confirmFinished,
          store,
          memoryBudgetBytes: budget,
        });
        uploader.subscribe((s) => {
          setStats((prev) => ({ ...prev, [track]: s }));
          if (s.state === "reconnecting…" || s.state === "error" || s.state === "refused" || s.state === "uploaded") {
            setAnnouncement(`${track}: ${s.state}`);
          }
        });
        recorder.addEventListener("start", (ev) => {
          const at = eventTime(ev);
          // Announce the type we asked for (e.g. video/webm;codecs=h264); Chromium
          // reports its own spelling (video/x-matroska;codecs=avc1) for the same bytes.
          // Only when the browser chose the format do we pass on its description.
          const reported = recorder.mimeType;
          setActiveMimes((prev) => ({ ...prev, [track]: reported }));
          if (track !== "audio") setStartedAt(at);
          uploader.start(at, mime || reported);
        });
        recorder.addEventListener("dataavailable", (ev) => {
          if (ev.data && ev.data.size > 0) uploader.push(ev.data, eventTime(ev));
        });
        recorder.addEventListener("stop", () => {
          // The last dataavailable has fired before stop.
          void uploader.finish();
          stopped += 1;
          if (stopped === rec.recorders.length) onAllStopped();
        });
        recorder.addEventListener("error", (ev) => {
          const err = (ev as Event & { error?: DOMException }).error;
          setError(`The ${track} recorder failed${err?.message ? `: ${err.message}` : "."} Recording stopped.`);
          stopRecording();
        });
        rec.recorders.push(recorder);
        rec.uploaders.push(uploader);
        lastUploaders.current[track] = uploader;
      }
      recording.current = rec;
      for (const r of rec.recorders) r.start(1000);
    } catch (e) {
      rec.uploaders.forEach((u) => u.abort());
      for (const r of rec.recorders) {
        if (r.state !== "inactive") r.stop();
      }
      recording.current = null;
      release();
      giveUp(`The browser could not record: ${e instanceof Error ? e.message : String(e)}`);
      return;
    }

    // Ending the screen share from the browser's own UI stops the recording.
    for (const t of visual.getVideoTracks()) t.addEventListener("ended", () => stopRecording());
    setPhase("recording");
    phaseRef.current = "recording";
    setAnnouncement("Recording.");
  }, [
    audioMime,
    cameraId,
    microphoneId,
    mode,
    onSessionsChanged,
    onUnauthorized,
    refreshDevices,
    showStream,
    stopPreview,
    stopRecording,
    videoMime,
  ]);

  // Elapsed time.
  useEffect(() => {
    if (phase !== "recording" && phase !== "stopping") return;
    setNow(Date.now());
    const t = setInterval(() => setNow(Date.now()), 500);
    return () => clearInterval(t);
  }, [phase]);

  // Warn before leaving while recording (leaving stops the recorder), or while bytes
  // that are held in memory only (no IndexedDB) are unacknowledged. Stored bytes
  // survive: the next page load resumes their upload.
  const memoryOnly = Object.values(stats).some((s) => s && !s.persistent && s.backlog > 0);
  // A refused or failed track held in memory only (no IndexedDB) goes with the page.
  const keptInMemoryOnly = Object.values(stats).some(
    (s) => s && !s.persistent && (s.state === "refused" || s.state === "error") && !s.discarded && s.bytesInMemory > 0,
  );
  const busy =
    phase === "starting" || phase === "recording" || (phase === "stopping" && memoryOnly) || keptInMemoryOnly;
  useEffect(() => {
    if (!busy) return;
    const onBeforeUnload = (e: BeforeUnloadEvent) => {
      e.preventDefault();
      e.returnValue = "";
    };
    window.addEventListener("beforeunload", onBeforeUnload);
    return () => window.removeEventListener("beforeunload", onBeforeUnload);
  }, [busy]);

  // Release devices when the component goes away.
  useEffect(
    () => () => {
      stopStream(previewStream.current);
      const rec = recording.current;
      if (rec) {
        rec.recorders.forEach((r) => r.state !== "inactive" && r.stop());
        rec.streams.forEach(stopStream);
      }
    },
    [],
  );

  // ---- view ---------------------------------------------------------------------

  const localCopy = (track: TrackName): LocalCopy | undefined => {
    const uploader = lastUploaders.current[track];
    if (!uploader) return undefined;
    return {
      sessionId: uploader.sessionId,
      save: () => uploader.recording(),
      discard: () => uploader.discard(),
      canDiscard: phase === "done",
    };
  };

  const locked = phase !== "idle" && phase !== "done";
  const trackOrder: TrackName[] = [mode === "screen" ? "screen" : "video", "audio"];
  const shownStats = (["video", "screen", "audio"] as TrackName[])
    .map((t) => stats[t])
    .filter((s): s is UploadStats => !!s);

  if (supported === false) {
    return (
      <section className="card" aria-labelledby="record-heading">
        <h2 id="record-heading">Record</h2>
        <p className="notice bad" role="alert">
          This browser cannot record media here. Use a current Chrome, Edge, Firefox or Safari, over HTTPS or on
          localhost.
        </p>
      </section>
    );
  }

  return (
    <section className="card" aria-labelledby="record-heading">
      <div className="card-head">
        <h2 id="record-heading">Record</h2>
        {phase === "recording" || phase === "stopping" ? (
          <span className="rec-indicator" role="timer" aria-label="Recording time">
            <span className="rec-dot" aria-hidden="true" />
            {formatDuration(startedAt ? (now - startedAt) / 1000 : 0)}
          </span>
        ) : null}
      </div>

      <div className="record-grid">
        <div className="preview-wrap">
          <video
            ref={videoRef}
            className="preview"
            muted
            autoPlay
            playsInline
            aria-label="Live preview"
          />
          {!previewOn && !locked ? (
            <div className="preview-placeholder" aria-hidden="true">
              {mode === "screen" ? "The shared screen shows here while recording." : "Camera preview is off."}
            </div>
          ) : null}
        </div>

        <div className="controls">
          <fieldset className="mode" disabled={locked}>
            <legend>Source</legend>
            <label className="radio">
              <input
                type="radio"
                name="mode"
                value="camera"
                checked={mode === "camera"}
                onChange={() => setMode("camera")}
              />
              Camera + microphone
            </label>
            <label className="radio">
              <input
                type="radio"
                name="mode"
                value="screen"
                checked={mode === "screen"}
                disabled={!screenSupported}
                onChange={() => setMode("screen")}
              />
              Screen + microphone
            </label>
          </fieldset>

          {mode === "camera" ? (
            <div className="field">
              <label htmlFor="camera-select">Camera</label>
              <select
                id="camera-select"
                value={cameraId}
                disabled={locked}
                onChange={(e) => setCameraId(e.target.value)}
              >
                {devices.cameras.length === 0 ? <option value="">Default camera</option> : null}
                {devices.cameras.map((d) => (
                  <option key={d.deviceId} value={d.deviceId}>
                    {d.label}
                  </option>
                ))}
              </select>
            </div>
          ) : null}

          <div className="field">
            <label htmlFor="microphone-select">Microphone</label>
            <select
              id="microphone-select"
              value={microphoneId}
              disabled={locked}
              onChange={(e) => setMicrophoneId(e.target.value)}
            >
              {devices.microphones.length === 0 ? <option value="">Default microphone</option> : null}
              {devices.microphones.map((d) => (
                <option key={d.deviceId} value={d.deviceId}>
                  {d.label}
                </option>
              ))}
            </select>
          </div>

          <p className="codecs" data-testid="codecs">
            <CodecLine
              label={mode === "screen" ? "Screen" : "Video"}
              testId="video-codec"
              chosen={videoMime}
              reported={activeMimes[trackOrder[0]]}
            />
            <CodecLine label="Audio" testId="audio-codec" chosen={audioMime} reported={activeMimes.audio} />
          </p>

          <div className="buttons">
            {phase === "recording" || phase === "stopping" ? (
              <button
                type="button"
                className="button danger"
                onClick={stopRecording}
                disabled={phase === "stopping"}
              >
                Stop recording
              </button>
            ) : (
              <button
                type="button"
                className="button primary"
                onClick={() => void startRecording()}
                disabled={phase === "starting" || supported === null}
                aria-busy={phase === "starting"}
              >
                Start recording
              </button>
            )}
            {mode === "camera" ? (
              previewOn ? (
                <button type="button" className="button" onClick={stopPreview} disabled={locked}>
                  Stop preview
                </button>
              ) : (
                <button
                  type="button"
                  className="button"
                  onClick={() => void startPreview(cameraId)}
                  disabled={locked || supported === null}
                >
                  Start preview
                </button>
              )
            ) : null}
          </div>

          <ErrorNotice error={error} />
        </div>
      </div>

      <div className="upload-panel" role="group" aria-label="Upload status">
        <p className="session-line">
          Session:{" "}
          <code data-testid="session-id">{sessionId ?? ""}</code>
          {!sessionId ? <span className="muted">none yet</span> : null}
          {phase === "stopping" ? <span className="muted"> · finishing upload…</span> : null}
          {phase === "done" ? <span className="muted"> · done</span> : null}
        </p>
        {shownStats.length > 0 ? (
          <div className="track-list">
            {shownStats.map((s) => (
              <TrackStatus key={s.track} stats={s} local={localCopy(s.track)} />
            ))}
          </div>
        ) : null}
      </div>
      <p className="sr-only" aria-live="polite">
        {announcement}
      </p>
    </section>
  );
}

function CodecLine(props: { label: string; testId: string; chosen: string; reported?: string }) {
  const { label, testId, chosen, reported } = props;
  const shown = chosen || reported || "";
  const differs = !!reported && !!chosen && reported.replace(/\s/g, "").toLowerCase() !== chosen.toLowerCase();
  return (
    <span>
      {label}: <code data-testid={testId}>{shown || "browser default"}</code>{" "}
      <span className="muted">({describeMime(shown)})</span>
      {differs ? (
        <span className="muted reported" title="What the browser's recorder reports for the same format">
          {" "}
          · recorder reports <code>{reported}</code>
        </span>
      ) : null}
    </span>
  );
}
