// @tapedeck/recorder: record camera, microphone or screen in a browser and upload it to
// Tapedeck, resumably. The custom element is in "@tapedeck/recorder/element".

export { record } from "./recorder.js";
export type {
  RecordOptions,
  Recording,
  RecorderEvents,
  RecordingError,
  RecordingResult,
  RecordingState,
  StateEvent,
} from "./recorder.js";
export { TrackUploader, storedStats, MAX_FRAME_BYTES, DEFAULT_MEMORY_BUDGET_BYTES } from "./uploader.js";
export type { SocketFactory, SocketLike, UploaderOptions } from "./uploader.js";
export { resumeTrack } from "./resume.js";
export type { ResumeOptions } from "./resume.js";
export { IndexedDBChunkStore } from "./store.js";
export type { ChunkStore, NewUpload, OpenOptions, Refusal, StoredRecording, StoredUpload } from "./store.js";
export { ChunkLedger } from "./ledger.js";
export { MemoryBudget } from "./memory.js";
export { decideClose, reconnectDelay, FATAL_CLOSE } from "./policy.js";
export type { BackoffOptions, CloseContext, CloseDecision } from "./policy.js";
export { parseMessage, trackUrl } from "./protocol.js";
export { lockSession } from "./locks.js";
export type { Release } from "./locks.js";
export * from "./media.js";
export type { LocalRecording, ResumePoint, TrackName, UploadState, UploadStats } from "./types.js";
