// Types shared by the uploader, the store and the recorder (no I/O in here).

export type TrackName = "video" | "audio" | "screen";

export type UploadState =
  | "idle"
  | "connecting"
  | "recording"
  | "reconnecting…"
  | "finishing"
  | "uploaded"
  /** The server refused the track for good; this browser keeps it to save or discard. */
  | "refused"
  | "error";

export interface UploadStats {
  readonly track: TrackName;
  readonly state: UploadState;
  readonly mimeType: string;
  /** Bytes handed to the uploader by the recorder (when resuming: stored before the reload). */
  readonly bytesRecorded: number;
  /** Bytes written to this browser's IndexedDB so far (a reload keeps them). */
  readonly bytesStored: number;
  /** Unacknowledged bytes held in memory right now (the rest of the backlog is in IndexedDB). */
  readonly bytesInMemory: number;
  /** True while every recorded byte goes to IndexedDB before it is sent. */
  readonly persistent: boolean;
  /** This uploader finishes a recording that a previous page (reload, crash) left behind. */
  readonly resumed: boolean;
  /** The recorder's start, epoch ms (null before it started). */
  readonly startedAt: number | null;
  /** Epoch ms of the recorder event that produced the last kept chunk. */
  readonly recordedUntil: number | null;
  /** Offset up to which bytes were written to the current (or last) socket. */
  readonly bytesSent: number;
  /** Bytes the server has confirmed as durable. */
  readonly bytesAcknowledged: number;
  /** Recorded but not yet acknowledged (what a crash of this tab would lose). */
  readonly backlog: number;
  /** Number of reconnects so far. */
  readonly reconnects: number;
  /** When a reconnect is scheduled: epoch ms of the next attempt. */
  readonly nextRetryAt: number | null;
  /** Last error (server message, or what happened to the connection). */
  readonly error: string | null;
  readonly errorCode: string | null;
  readonly closeCode: number | null;
  /** Set when IndexedDB refused a write (then the rest is kept in memory only). */
  readonly storageError: string | null;
  /** The person discarded this browser's copy (after a refusal or failure). */
  readonly discarded: boolean;
}

/** A track as this browser keeps it, to save as a file. */
export interface LocalRecording {
  blob: Blob;
  /** Byte range of the track that `blob` holds. */
  start: number;
  end: number;
  /** From the header to the last recorded byte: the file plays as recorded. */
  whole: boolean;
}

/** Where an upload that IndexedDB holds continues from. */
export interface ResumePoint {
  /** End of the stored bytes. */
  recorded: number;
  /** Last `committed` the server reported (StoredUpload.committed). */
  committed: number;
  /** Start offsets of the stored chunks, ascending (from 0; an older version deleted acknowledged ones). */
  offsets: number[];
  recordedUntil: number | null;
}
