"use client";

import { useCallback, useEffect, useRef, useState } from "react";
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
  type TrackName,
  type UploadStats,
} from "@tapedeck/recorder";
import { describeMime, formatDuration } from "@/lib/format";
import { TrackStatus, type LocalCopy } from "./TrackStatus";
import { ErrorNotice } from "./ErrorNotice";
import { useRecording } from "./useRecording";

interface Props {
  /** Something about the list of sessions changed (created, uploaded). */
  onSessionsChanged: () => void;
  /** The API answered 401: ask for a token. */
  onUnauthorized: () => void;
}

interface Capabilities {
  record: boolean;
  screen: boolean;
  /** The MIME types to ask MediaRecorder for ("" lets the browser choose). */
  videoMime: string;
  audioMime: string;
}

export function Recorder({ onSessionsChanged, onUnauthorized }: Props) {
  // What this browser can do, learnt once mounted (null: not yet known).
  const [caps, setCaps] = useState<Capabilities | null>(null);
  const supported = caps ? caps.record : null;
  const { screen: screenSupported = false, videoMime = "", audioMime = "" } = caps ?? {};
  const [mode, setMode] = useState<CaptureMode>("camera");
  const [devices, setDevices] = useState<DeviceLists>({ cameras: [], microphones: [] });
  const [cameraId, setCameraId] = useState("");
  const [microphoneId, setMicrophoneId] = useState("");
  const [previewOn, setPreviewOn] = useState(false);
  const [now, setNow] = useState(0);
  const recording = useRecording({ onSessionsChanged, onUnauthorized });
  const { phase, sessionId, stats, startedAt, mimeTypes: activeMimes, error, announcement } = recording.view;
  const { setError } = recording;

  const videoRef = useRef<HTMLVideoElement>(null);
  const previewStream = useRef<MediaStream | null>(null);
  // The streams of the running recording (released once its recorders stopped).
  const recordingStreams = useRef<MediaStream[]>([]);
  const phaseRef = useRef(phase);
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
    setCaps({
      record: canRecord(),
      screen: canCaptureScreen(),
      videoMime: pickMimeType(VIDEO_MIME_CANDIDATES),
      audioMime: pickMimeType(AUDIO_MIME_CANDIDATES),
    });
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
    if (recordingStreams.current.length === 0) showStream(null);
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

  const stopRecording = recording.stop;

  const startRecording = useCallback(async () => {
    if (phaseRef.current === "starting" || phaseRef.current === "recording" || phaseRef.current === "stopping") return;
    recording.starting();
    phaseRef.current = "starting";

    const acquired: MediaStream[] = [];
    const release = () => {
      acquired.forEach(stopStream);
      recordingStreams.current = [];
      if (previewStream.current && !acquired.includes(previewStream.current)) showStream(previewStream.current);
      else showStream(null);
    };
    const giveUp = (message: string) => {
      release();
      recording.fail(message);
      phaseRef.current = "idle";
    };

    // 1. Capture.
    let visual: MediaStream;
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
    recordingStreams.current = acquired;

    // 2. Session, recorders and uploads (@tapedeck/recorder).
    const ok = await recording.start({
      stream: new MediaStream([...visual.getVideoTracks(), ...mic.getAudioTracks()]),
      visualTrack: mode === "screen" ? "screen" : "video",
      videoMimeType: videoMime,
      audioMimeType: audioMime,
      onRecordersStopped: release,
    });
    if (!ok) release();
  }, [audioMime, cameraId, microphoneId, mode, recording, refreshDevices, showStream, stopPreview, videoMime]);

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

  // Release devices when the component goes away (useRecording stops the recorders).
  useEffect(
    () => () => {
      stopStream(previewStream.current);
      recordingStreams.current.forEach(stopStream);
    },
    [],
  );

  // ---- view ---------------------------------------------------------------------

  const localCopy = (track: TrackName): LocalCopy | undefined => {
    const uploader = recording.uploader(track);
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
