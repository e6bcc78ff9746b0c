// The browser's own copy of a recording: the `ChunkStore` interface the uploader talks to,
// and its IndexedDB implementation. A reload or a
// crashed tab loses the recorder, but not these bytes: the next page load resumes the
// upload from what is stored; and a recording the server refuses can still be saved
// as a file from here.
//
// Database "tapedeck", version 1:
//   uploads  key [sessionId, track]          → StoredUpload (the upload's metadata)
//   chunks   key [sessionId, track, offset]  → ArrayBuffer (the recorder's blob at that byte offset)
//
// A chunk and the upload's `recorded` are written in one transaction, so `recorded`
// is always the end of a gap-free run of stored chunks. Every chunk of a track stays
// here, from byte 0 on, until the server confirmed the whole track (`finished`) or the
// person discarded it: only the whole WebM, header included, plays as a saved file.
// An `ack` only moves the record's `committed`.

import type { TrackName } from "./types.js";

export interface StoredUpload {
  sessionId: string;
  track: TrackName;
  uploadToken: string;
  mimeType: string;
  /** The recorder's start (epoch ms), sent again in `start` when resuming. */
  startedAt: number;
  /** Bytes stored so far: chunks cover [first stored offset, recorded). */
  recorded: number;
  /** Epoch ms of the recorder event that produced the last stored chunk. */
  recordedUntil: number | null;
  /** Last `committed` the server reported (a resume sends from there; the chunks stay). */
  committed: number;
  /** The recorder stopped normally (only the upload was left). */
  stopped: boolean;
  /** The server refused this track for good: kept here to be saved or discarded, never resent. */
  refused?: Refusal | null;
  createdAt: number;
  updatedAt: number;
}

/** Why the server will not take (the rest of) a track. */
export interface Refusal {
  /** The server's error code (e.g. "finished"), when it sent one. */
  code: string | null;
  /** What to tell the person. */
  message: string;
  /** The WebSocket close code, when the refusal came with one. */
  closeCode: number | null;
  /** Epoch ms. */
  at: number;
}

/** A track's stored bytes, concatenated in order. */
export interface StoredRecording {
  blob: Blob;
  /** Offset of the first stored byte (0 unless chunks were lost or deleted by an older version). */
  start: number;
  /** End of the gap-free run of chunks from `start`. */
  end: number;
}

export interface NewUpload {
  sessionId: string;
  track: TrackName;
  uploadToken: string;
  mimeType: string;
  startedAt: number;
}

/**
 * Where an uploader keeps a track's chunks across reloads. Operations on one track are
 * called one after another, never concurrently.
 */
export interface ChunkStore {
  /** Create the upload's record (before its first chunk). */
  begin(upload: NewUpload): Promise<void>;
  /** Store the chunk at `offset` (= the bytes stored so far) and move `recorded` past it, atomically. */
  append(sessionId: string, track: TrackName, offset: number, blob: Blob, at: number): Promise<void>;
  update(sessionId: string, track: TrackName, patch: Partial<Pick<StoredUpload, "stopped" | "refused">>): Promise<void>;
  setCommitted(sessionId: string, track: TrackName, committed: number): Promise<void>;
  /** The stored chunk that starts exactly at `offset`. */
  read(sessionId: string, track: TrackName, offset: number): Promise<Blob>;
  /** Every stored chunk of a track, in order, as one Blob (up to the first gap). */
  readAll(sessionId: string, track: TrackName): Promise<StoredRecording>;
  /** Start offsets of a track's stored chunks, ascending. */
  offsets(sessionId: string, track: TrackName): Promise<number[]>;
  /** Delete the upload and its chunks. */
  remove(sessionId: string, track: TrackName): Promise<void>;
  /** Every stored upload (optionally of one session). */
  list(sessionId?: string): Promise<StoredUpload[]>;
}

export interface OpenOptions {
  /** Another IndexedDB (e.g. fake-indexeddb in tests); default: the page's. */
  indexedDB?: IDBFactory;
  /** Database name; default "tapedeck". */
  name?: string;
}

const DB_NAME = "tapedeck";
const DB_VERSION = 1;
const UPLOADS = "uploads";
const CHUNKS = "chunks";

function done(tx: IDBTransaction): Promise<void> {
  return new Promise((resolve, reject) => {
    tx.oncomplete = () => resolve();
    tx.onerror = () => reject(tx.error ?? new Error("IndexedDB transaction failed"));
    tx.onabort = () => reject(tx.error ?? new Error("IndexedDB transaction aborted"));
  });
}

function result<T>(req: IDBRequest<T>): Promise<T> {
  return new Promise((resolve, reject) => {
    req.onsuccess = () => resolve(req.result);
    req.onerror = () => reject(req.error ?? new Error("IndexedDB request failed"));
  });
}

/** All chunk keys of one track: [sid, track, 0] … [sid, track, +∞]. */
function trackRange(sessionId: string, track: string, upTo = Infinity): IDBKeyRange {
  return IDBKeyRange.bound([sessionId, track, 0], [sessionId, track, upTo]);
}

export class IndexedDBChunkStore implements ChunkStore {
  private constructor(private readonly db: IDBDatabase) {
    db.onversionchange = () => db.close();
  }

  /** Create the upload's record (before its first chunk). */
  async begin(u: NewUpload): Promise<void> {
    const tx = this.db.transaction([UPLOADS], "readwrite");
    const now = Date.now();
    const record: StoredUpload = {
      ...u,
      recorded: 0,
      recordedUntil: null,
      committed: 0,
      stopped: false,
      createdAt: now,
      updatedAt: now,
    };
    tx.objectStore(UPLOADS).put(record);
    await done(tx);
  }

  /**
   * Store the chunk that starts at byte `offset` and move the upload's `recorded`
   * to its end, atomically. Resolves once the transaction has committed.
   */
  async append(sessionId: string, track: TrackName, offset: number, blob: Blob, at: number): Promise<void> {
    const data = await blob.arrayBuffer();
    const tx = this.db.transaction([UPLOADS, CHUNKS], "readwrite");
    const uploads = tx.objectStore(UPLOADS);
    const req = uploads.get([sessionId, track]);
    req.onsuccess = () => {
      const record = req.result as StoredUpload | undefined;
      if (!record || record.recorded !== offset) {
        // No record (deleted meanwhile) or a gap: never store a chunk the record can't vouch for.
        tx.abort();
        return;
      }
      tx.objectStore(CHUNKS).put(data, [sessionId, track, offset]);
      uploads.put({ ...record, recorded: offset + data.byteLength, recordedUntil: at, updatedAt: Date.now() });
    };
    await done(tx);
  }

  /** Merge fields into the upload's record (no-op when it is gone). */
  async update(sessionId: string, track: TrackName, patch: Partial<Pick<StoredUpload, "stopped" | "refused">>): Promise<void> {
    const tx = this.db.transaction([UPLOADS], "readwrite");
    const uploads = tx.objectStore(UPLOADS);
    const req = uploads.get([sessionId, track]);
    req.onsuccess = () => {
      const record = req.result as StoredUpload | undefined;
      if (record) uploads.put({ ...record, ...patch, updatedAt: Date.now() });
    };
    await done(tx);
  }

  /** The server acknowledged bytes below `committed` (they stay stored: see the header). */
  async setCommitted(sessionId: string, track: TrackName, committed: number): Promise<void> {
    const tx = this.db.transaction([UPLOADS], "readwrite");
    const uploads = tx.objectStore(UPLOADS);
    const req = uploads.get([sessionId, track]);
    req.onsuccess = () => {
      const record = req.result as StoredUpload | undefined;
      if (record && committed > record.committed) uploads.put({ ...record, committed, updatedAt: Date.now() });
    };
    await done(tx);
  }

  /**
   * Every stored chunk of one track, in order, as one Blob: the WebM as recorded when
   * it starts at byte 0. Stops at the first gap (there should be none).
   */
  async readAll(sessionId: string, track: TrackName): Promise<StoredRecording> {
    const tx = this.db.transaction([CHUNKS], "readonly");
    const chunks = tx.objectStore(CHUNKS);
    const [keys, values] = await Promise.all([
      result(chunks.getAllKeys(trackRange(sessionId, track))),
      result(chunks.getAll(trackRange(sessionId, track))),
    ]);
    const parts: ArrayBuffer[] = [];
    const start = keys.length > 0 ? (keys[0] as [string, string, number])[2] : 0;
    let end = start;
    for (let i = 0; i < keys.length; i++) {
      const offset = (keys[i] as [string, string, number])[2];
      const data = values[i];
      if (offset !== end || !(data instanceof ArrayBuffer)) break;
      parts.push(data);
      end += data.byteLength;
    }
    return { blob: new Blob(parts), start, end };
  }

  /** The stored chunk that starts exactly at `offset`. */
  async read(sessionId: string, track: TrackName, offset: number): Promise<Blob> {
    const tx = this.db.transaction([CHUNKS], "readonly");
    const data = await result(tx.objectStore(CHUNKS).get([sessionId, track, offset]));
    if (!(data instanceof ArrayBuffer)) {
      throw new Error(`byte ${offset} of the ${track} track is missing from this browser's storage`);
    }
    return new Blob([data]);
  }

  /** Start offsets of the stored chunks of one track, ascending (keys only). */
  async offsets(sessionId: string, track: TrackName): Promise<number[]> {
    const tx = this.db.transaction([CHUNKS], "readonly");
    const keys = await result(tx.objectStore(CHUNKS).getAllKeys(trackRange(sessionId, track)));
    return keys.map((k) => (k as [string, string, number])[2]);
  }

  /** Delete the upload and all its chunks. */
  async remove(sessionId: string, track: TrackName): Promise<void> {
    const tx = this.db.transaction([UPLOADS, CHUNKS], "readwrite");
    tx.objectStore(CHUNKS).delete(trackRange(sessionId, track));
    tx.objectStore(UPLOADS).delete([sessionId, track]);
    await done(tx);
  }

  /** Every stored upload (optionally of one session). */
  async list(sessionId?: string): Promise<StoredUpload[]> {
    const tx = this.db.transaction([UPLOADS], "readonly");
    const store = tx.objectStore(UPLOADS);
    const all = (await result(
      sessionId === undefined
        ? store.getAll()
        : store.getAll(IDBKeyRange.bound([sessionId, ""], [sessionId, "\uffff"])),
    )) as StoredUpload[];
    return all;
  }

  // ---- opening ------------------------------------------------------------------

  private static opening: Promise<IndexedDBChunkStore | null> | null = null;

  /**
   * The store, or null where IndexedDB is unavailable (then uploads are kept in memory
   * only). Without options, the page's database, opened once.
   */
  static open(options?: OpenOptions): Promise<IndexedDBChunkStore | null> {
    if (options) return IndexedDBChunkStore.connect(options).catch(() => null);
    if (!IndexedDBChunkStore.opening) {
      IndexedDBChunkStore.opening = IndexedDBChunkStore.connect({}).catch(() => null);
    }
    return IndexedDBChunkStore.opening;
  }

  /** Close the database (tests; a page never needs to). */
  close(): void {
    this.db.close();
  }

  private static connect(options: OpenOptions): Promise<IndexedDBChunkStore | null> {
    const factory = options.indexedDB ?? (typeof indexedDB === "undefined" ? undefined : indexedDB);
    if (!factory) return Promise.resolve(null);
    return new Promise((resolve, reject) => {
      let req: IDBOpenDBRequest;
      try {
        req = factory.open(options.name ?? DB_NAME, DB_VERSION);
      } catch (e) {
        reject(e);
        return;
      }
      req.onupgradeneeded = () => {
        const db = req.result;
        if (!db.objectStoreNames.contains(UPLOADS)) db.createObjectStore(UPLOADS, { keyPath: ["sessionId", "track"] });
        if (!db.objectStoreNames.contains(CHUNKS)) db.createObjectStore(CHUNKS);
      };
      req.onsuccess = () => resolve(new IndexedDBChunkStore(req.result));
      req.onerror = () => reject(req.error ?? new Error("IndexedDB unavailable"));
      req.onblocked = () => reject(new Error("IndexedDB upgrade blocked by another tab"));
    });
  }
}
