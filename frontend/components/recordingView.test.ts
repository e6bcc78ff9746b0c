import { describe, expect, it } from "vitest";
import type { UploadStats } from "@tapedeck/recorder";
import { INITIAL, reduce, type RecordingView } from "./recordingView";

function stats(track: UploadStats["track"], state: UploadStats["state"]): UploadStats {
  return {
    track,
    state,
    mimeType: "video/webm",
    bytesRecorded: 10,
    bytesStored: 10,
    bytesInMemory: 0,
    persistent: true,
    resumed: false,
    startedAt: 1,
    recordedUntil: 2,
    bytesSent: 10,
    bytesAcknowledged: state === "uploaded" ? 10 : 0,
    backlog: state === "uploaded" ? 0 : 10,
    reconnects: 0,
    nextRetryAt: null,
    error: null,
    errorCode: null,
    closeCode: null,
    storageError: null,
    discarded: false,
  };
}

const run = (...actions: Parameters<typeof reduce>[1][]): RecordingView => actions.reduce(reduce, INITIAL);

describe("the page's view of a recording", () => {
  it("follows the package's states into the page's phases", () => {
    const event = (state: "starting" | "recording" | "stopping" | "uploading") => ({
      type: "state" as const,
      event: { state, startedAt: 5, mimeTypes: { video: "video/x-matroska;codecs=avc1" } },
    });
    let view = run({ type: "starting" }, { type: "session", sessionId: "abc" }, event("starting"));
    expect(view).toMatchObject({ phase: "starting", sessionId: "abc", announcement: "" });
    view = reduce(view, event("recording"));
    expect(view).toMatchObject({ phase: "recording", startedAt: 5, announcement: "Recording." });
    expect(view.mimeTypes.video).toBe("video/x-matroska;codecs=avc1");
    expect(reduce(view, event("stopping")).phase).toBe("stopping");
    expect(reduce(view, event("uploading")).phase).toBe("stopping");
  });

  it("keeps each track's stats and announces what a person must hear", () => {
    let view = run({ type: "progress", stats: stats("video", "recording") });
    expect(view.stats.video?.state).toBe("recording");
    expect(view.announcement).toBe("");
    view = reduce(view, { type: "progress", stats: stats("audio", "reconnecting…") });
    expect(Object.keys(view.stats).sort()).toEqual(["audio", "video"]);
    expect(view.announcement).toBe("audio: reconnecting…");
  });

  it("ends in done, naming the tracks that failed, or in idle with the reason it could not start", () => {
    const failed = run({
      type: "finished",
      result: { sessionId: "abc", ok: false, tracks: [stats("video", "refused"), stats("audio", "uploaded")] },
    });
    expect(failed.phase).toBe("done");
    expect(failed.announcement).toContain("Upload failed for video.");
    const ok = run({ type: "finished", result: { sessionId: "abc", ok: true, tracks: [stats("video", "uploaded")] } });
    expect(ok.announcement).toBe("Recording uploaded. You can compile it below.");
    const refused = run({ type: "starting" }, { type: "failed", message: "Permission denied." });
    expect(refused).toMatchObject({ phase: "idle", error: "Permission denied." });
    // A new recording clears the last one's tracks but keeps its session on show until the next.
    const again = run({ type: "session", sessionId: "abc" }, { type: "progress", stats: stats("video", "uploaded") }, { type: "starting" });
    expect(again).toMatchObject({ phase: "starting", sessionId: "abc", stats: {} });
  });
});
