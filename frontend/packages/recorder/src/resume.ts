// Finishing uploads that an earlier page left in the store (reload, crashed tab).

import { trackUrl } from "./protocol.js";
import type { ChunkStore, StoredUpload } from "./store.js";
import type { TrackName } from "./types.js";
import { TrackUploader, type SocketFactory } from "./uploader.js";

export interface ResumeOptions {
  /** The Tapedeck server (WebSockets go to its /ws/{track}), unless `socketUrl` is given. */
  server?: string;
  socketUrl?: (track: TrackName) => string;
  confirmFinished?: (track: TrackName, bytes: number) => Promise<boolean>;
  memoryBudgetBytes?: number;
  socket?: SocketFactory;
}

/**
 * Resend a stored track from the server's `committed` and finish it (the recorder that
 * fed it is gone). Returns the running uploader; a refused track is not resent (check
 * `record.refused` first).
 */
export async function resumeTrack(store: ChunkStore, record: StoredUpload, options: ResumeOptions): Promise<TrackUploader> {
  const offsets = await store.offsets(record.sessionId, record.track);
  const url = options.socketUrl
    ? options.socketUrl(record.track)
    : trackUrl(options.server ?? "", record.track);
  const uploader = new TrackUploader({
    track: record.track,
    sessionId: record.sessionId,
    uploadToken: record.uploadToken,
    mimeType: record.mimeType,
    url,
    confirmFinished: options.confirmFinished,
    store,
    memoryBudgetBytes: options.memoryBudgetBytes,
    socket: options.socket,
    resume: { recorded: record.recorded, committed: record.committed, offsets, recordedUntil: record.recordedUntil },
  });
  uploader.start(record.startedAt, record.mimeType);
  void uploader.finish(); // nothing more will come
  return uploader;
}
