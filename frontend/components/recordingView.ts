// What the page shows of a recording, as a pure reducer over @tapedeck/recorder's events
// (useRecording feeds it; tested in recordingView.test.ts).

import type { RecordingResult, StateEvent, TrackName, UploadStats } from "@tapedeck/recorder";

/** The page's phases: "stopping" covers the package's "stopping" and "uploading". */
export type Phase = "idle" | "starting" | "recording" | "stopping" | "done";

export interface RecordingView {
  phase: Phase;
  sessionId: string | null;
  stats: Partial<Record<TrackName, UploadStats>>;
  /** The visual recorder's start (epoch ms). */
  startedAt: number | null;
  /** What each recorder reports it produces. */
  mimeTypes: Partial<Record<TrackName, string>>;
  error: string | null;
  /** For screen readers (an aria-live region). */
  announcement: string;
}

export type Action =
  | { type: "starting" }
  | { type: "session"; sessionId: string }
  | { type: "state"; event: StateEvent }
  | { type: "progress"; stats: UploadStats }
  | { type: "error"; message: string | null }
  | { type: "failed"; message: string }
  | { type: "finished"; result: RecordingResult };

export const INITIAL: RecordingView = {
  phase: "idle",
  sessionId: null,
  stats: {},
  startedAt: null,
  mimeTypes: {},
  error: null,
  announcement: "",
};

const PHASE: Record<StateEvent["state"], Phase> = {
  starting: "starting",
  recording: "recording",
  stopping: "stopping",
  uploading: "stopping",
  finished: "done",
  failed: "idle",
};

const ANNOUNCED = new Set<UploadStats["state"]>(["reconnecting…", "error", "refused", "uploaded"]);

export function reduce(view: RecordingView, action: Action): RecordingView {
  switch (action.type) {
    case "starting":
      return { ...INITIAL, phase: "starting", sessionId: view.sessionId };
    case "session":
      return { ...view, sessionId: action.sessionId };
    case "state": {
      const phase = PHASE[action.event.state];
      return {
        ...view,
        phase,
        startedAt: action.event.startedAt,
        mimeTypes: action.event.mimeTypes,
        announcement: phase === "recording" && view.phase !== "recording" ? "Recording." : view.announcement,
      };
    }
    case "progress": {
      const s = action.stats;
      return {
        ...view,
        stats: { ...view.stats, [s.track]: s },
        announcement: ANNOUNCED.has(s.state) ? `${s.track}: ${s.state}` : view.announcement,
      };
    }
    case "error":
      return { ...view, error: action.message };
    case "failed":
      return { ...view, phase: "idle", error: action.message };
    case "finished": {
      const failed = action.result.tracks.filter((t) => t.state === "error" || t.state === "refused");
      return {
        ...view,
        phase: "done",
        announcement: failed.length
          ? `Upload failed for ${failed.map((t) => t.track).join(" and ")}. This browser keeps the recording: you can save it to this computer.`
          : "Recording uploaded. You can compile it below.",
      };
    }
  }
}

