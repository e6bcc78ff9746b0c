// Media helpers: codec choice, device lists, capture. No React in here.

/** In order of preference: H.264 first so that compiling is a remux (SPEC §8). */
export const VIDEO_MIME_CANDIDATES = [
  "video/webm;codecs=h264",
  "video/mp4;codecs=avc1",
  "video/webm;codecs=vp9",
  "video/webm;codecs=vp8",
  "video/webm",
] as const;

export const AUDIO_MIME_CANDIDATES = ["audio/webm;codecs=opus", "audio/mp4", "audio/webm"] as const;

export function canRecord(): boolean {
  return (
    typeof window !== "undefined" &&
    typeof window.MediaRecorder !== "undefined" &&
    !!navigator.mediaDevices?.getUserMedia
  );
}

export function canCaptureScreen(): boolean {
  return typeof navigator !== "undefined" && !!navigator.mediaDevices?.getDisplayMedia;
}

/** The first MIME type MediaRecorder supports, or "" (let the browser choose). */
export function pickMimeType(candidates: readonly string[]): string {
  if (typeof MediaRecorder === "undefined") return "";
  for (const type of candidates) {
    try {
      if (MediaRecorder.isTypeSupported(type)) return type;
    } catch {
      // keep looking
    }
  }
  return "";
}

export interface DeviceOption {
  deviceId: string;
  label: string;
}

export interface DeviceLists {
  cameras: DeviceOption[];
  microphones: DeviceOption[];
}

/** Cameras and microphones. Labels are empty until the page has permission. */
export async function listDevices(): Promise<DeviceLists> {
  if (typeof navigator === "undefined" || !navigator.mediaDevices?.enumerateDevices) {
    return { cameras: [], microphones: [] };
  }
  const devices = await navigator.mediaDevices.enumerateDevices();
  const cameras: DeviceOption[] = [];
  const microphones: DeviceOption[] = [];
  for (const d of devices) {
    // Before permission, browsers list one entry per kind with an empty id.
    if (!d.deviceId) continue;
    if (d.kind === "videoinput") {
      cameras.push({ deviceId: d.deviceId, label: d.label || `Camera ${cameras.length + 1}` });
    } else if (d.kind === "audioinput") {
      microphones.push({ deviceId: d.deviceId, label: d.label || `Microphone ${microphones.length + 1}` });
    }
  }
  return { cameras, microphones };
}

export type CaptureMode = "camera" | "screen";

export async function captureCamera(cameraId: string): Promise<MediaStream> {
  return navigator.mediaDevices.getUserMedia({
    video: {
      ...(cameraId ? { deviceId: { exact: cameraId } } : {}),
      width: { ideal: 1280 },
      height: { ideal: 720 },
      frameRate: { ideal: 30 },
    },
    audio: false,
  });
}

export async function captureMicrophone(microphoneId: string): Promise<MediaStream> {
  return navigator.mediaDevices.getUserMedia({
    video: false,
    audio: {
      ...(microphoneId ? { deviceId: { exact: microphoneId } } : {}),
      echoCancellation: true,
      noiseSuppression: true,
    },
  });
}

export async function captureScreen(): Promise<MediaStream> {
  return navigator.mediaDevices.getDisplayMedia({ video: { frameRate: { ideal: 30 } }, audio: false });
}

export function stopStream(stream: MediaStream | null | undefined): void {
  stream?.getTracks().forEach((t) => t.stop());
}

/** Readable reason for a getUserMedia / getDisplayMedia failure. */
export function describeCaptureError(e: unknown, what: string): string {
  const name = e instanceof DOMException || e instanceof Error ? e.name : "";
  switch (name) {
    case "NotAllowedError":
    case "SecurityError":
      return `Permission to use the ${what} was denied. Allow it in the browser's site settings and try again.`;
    case "NotFoundError":
    case "OverconstrainedError":
      return `No ${what} was found. Connect one, or pick another in the list.`;
    case "NotReadableError":
    case "AbortError":
      return `The ${what} is in use by another program or could not be started.`;
    default:
      return `Could not start the ${what}${e instanceof Error && e.message ? `: ${e.message}` : "."}`;
  }
}
