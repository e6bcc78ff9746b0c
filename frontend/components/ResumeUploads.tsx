"use client";

import { useEffect, useRef, useState } from "react";
import { getSession } from "@/lib/api";
import { trackSocketUrl } from "@/lib/config";
import { formatDuration } from "@/lib/format";
import {
  IndexedDBChunkStore,
  lockSession,
  resumeTrack,
  storedStats,
  type ChunkStore,
  type Release,
  type StoredUpload,
  type TrackName,
  type TrackUploader,
  type UploadStats,
} from "@tapedeck/recorder";
import { TrackStatus, type LocalCopy } from "./TrackStatus";

// On page load: finish the uploads that an earlier page of this browser left
// unfinished (reload, closed or crashed tab). The recorder died with that page, so
// what IndexedDB holds is the whole recording: resend it from the server's
// `committed`, then `finish` each track. Tracks the server refused for good are not
// resent: they are offered to save as a file, or to discard.

type ItemState = "uploading" | "uploaded" | "refused" | "error";

interface Resumption {
  sessionId: string;
  /** Every recorder had stopped before the page went away (only the upload was left). */
  stopped: boolean;
  startedAt: number | null;
  recordedUntil: number | null;
  bytesRecorded: number;
  stats: Partial<Record<TrackName, UploadStats>>;
  /** Save / discard this browser's copy of each track. */
  local: Partial<Record<TrackName, LocalCopy>>;
  /** Every track is uploaded, refused or failed (nothing is being sent any more). */
  settled: boolean;
}

function itemState(item: Resumption): ItemState {
  if (!item.settled) return "uploading";
  const states = Object.values(item.stats).map((s) => s?.state);
  if (states.includes("refused")) return "refused";
  if (states.includes("error")) return "error";
  return "uploaded";
}

interface Props {
  /** A resumed session finished uploading (the list should show it as recorded). */
  onSessionsChanged: () => void;
}

const TRACK_ORDER: TrackName[] = ["video", "screen", "audio"];

export function ResumeUploads({ onSessionsChanged }: Props) {
  const [items, setItems] = useState<Resumption[]>([]);
  const changed = useRef(onSessionsChanged);
  changed.current = onSessionsChanged;

  useEffect(() => {
    const ctrl = new AbortController();
    const uploaders: TrackUploader[] = [];
    const update = (sessionId: string, f: (r: Resumption) => Resumption) =>
      setItems((prev) => prev.map((r) => (r.sessionId === sessionId ? f(r) : r)));
    // A discarded track leaves the card; so does the card once no track is left.
    const dropTrack = (sessionId: string, track: TrackName) =>
      setItems((prev) =>
        prev.flatMap((r) => {
          if (r.sessionId !== sessionId) return [r];
          const stats = { ...r.stats };
          const local = { ...r.local };
          delete stats[track];
          delete local[track];
          return Object.keys(stats).length > 0 ? [{ ...r, stats, local }] : [];
        }),
      );

    const resume = async (store: ChunkStore, sessionId: string) => {
      let release: Release;
      try {
        // Waits while another page (a live recording, or the page before a reload
        // that is still going away) owns this session.
        release = await lockSession(sessionId, ctrl.signal);
      } catch {
        return;
      }
      try {
        // Read again under the lock: the owner may have finished it meanwhile.
        const records = await store.list(sessionId);
        if (records.length === 0 || ctrl.signal.aborted) return;
        const starts = records.map((r) => r.startedAt).filter((t) => t > 0);
        const ends = records.map((r) => r.recordedUntil).filter((t): t is number => t !== null);
        setItems((prev) => [
          ...prev.filter((r) => r.sessionId !== sessionId),
          {
            sessionId,
            stopped: records.every((r) => r.stopped),
            startedAt: starts.length ? Math.min(...starts) : null,
            recordedUntil: ends.length ? Math.max(...ends) : null,
            bytesRecorded: records.reduce((n, r) => n + r.recorded, 0),
            stats: {},
            local: {},
            settled: false,
          },
        ]);
        // Refused for good: shown with its reason, never resent.
        const refused = records.filter((r) => r.refused);
        const active = records.filter((r) => !r.refused);
        const stored = (r: StoredUpload): LocalCopy => ({
          sessionId,
          save: async () => {
            const kept = await store.readAll(sessionId, r.track);
            return { ...kept, whole: kept.start === 0 && kept.end === r.recorded };
          },
          discard: async () => {
            await store.remove(sessionId, r.track);
            dropTrack(sessionId, r.track);
          },
          canDiscard: true,
        });
        update(sessionId, (it) => ({
          ...it,
          stats: { ...it.stats, ...Object.fromEntries(refused.map((r) => [r.track, storedStats(r)])) },
          local: { ...it.local, ...Object.fromEntries(refused.map((r) => [r.track, stored(r)])) },
        }));
        const confirmFinished = async (track: TrackName, bytes: number) => {
          const s = await getSession(sessionId);
          const t = s.tracks.find((x) => x.name === track);
          return !!t && t.finished && t.bytes === bytes;
        };
        const mine = await Promise.all(
          active.map((r) => resumeTrack(store, r, { socketUrl: trackSocketUrl, confirmFinished })),
        );
        if (ctrl.signal.aborted) {
          for (const u of mine) u.abort("The page stopped resuming this upload.");
          return;
        }
        for (const [i, uploader] of mine.entries()) {
          const r = active[i];
          uploaders.push(uploader);
          const local: LocalCopy = {
            sessionId,
            save: () => uploader.recording(),
            discard: async () => {
              await uploader.discard();
              dropTrack(sessionId, r.track);
            },
            canDiscard: true,
          };
          uploader.subscribe((s) => {
            if (s.discarded) return;
            update(sessionId, (it) => ({
              ...it,
              stats: { ...it.stats, [r.track]: s },
              local: { ...it.local, [r.track]: local },
            }));
          });
        }
        await Promise.all(mine.map((u) => u.whenSettled));
        if (ctrl.signal.aborted) return;
        update(sessionId, (it) => ({ ...it, settled: true }));
        if (mine.length > 0) changed.current();
      } catch {
        // IndexedDB failed: leave the stored copy for a later load
      } finally {
        release();
      }
    };

    void (async () => {
      const store = await IndexedDBChunkStore.open();
      if (!store || ctrl.signal.aborted) return;
      let sessions: string[];
      try {
        sessions = [...new Set((await store.list()).map((r) => r.sessionId))];
      } catch {
        return;
      }
      for (const id of sessions) void resume(store, id);
    })();

    return () => {
      ctrl.abort();
      // Only on unmount (not on page unload): keep the stored copy for the next load.
      for (const u of uploaders) u.abort("The page stopped resuming this upload.");
    };
  }, []);

  if (items.length === 0) return null;

  return (
    <section className="card" aria-labelledby="resume-heading">
      <h2 id="resume-heading">Unfinished upload{items.length > 1 ? "s" : ""}</h2>
      {items.map((item) => (
        <ResumeItem
          key={item.sessionId}
          item={item}
          onDismiss={() => setItems((prev) => prev.filter((r) => r.sessionId !== item.sessionId))}
        />
      ))}
    </section>
  );
}

function ResumeItem({ item, onDismiss }: { item: Resumption; onDismiss: () => void }) {
  const seconds =
    item.startedAt !== null && item.recordedUntil !== null
      ? Math.max(0, (item.recordedUntil - item.startedAt) / 1000)
      : null;
  const stats = TRACK_ORDER.map((t) => item.stats[t]).filter((s): s is UploadStats => !!s);
  const backlog = stats.reduce((n, s) => n + s.backlog, 0);
  const state = itemState(item);
  let message: string;
  if (state === "uploaded") {
    message = `The interrupted recording is uploaded (${formatDuration(seconds)} recorded before the page went away). You can compile it below.`;
  } else if (state === "refused") {
    message =
      "The server refused this recording, so it was not uploaded completely. This browser keeps it: save it to this computer, or discard it.";
  } else if (state === "error") {
    message = "The interrupted recording could not be uploaded completely.";
  } else if (item.stopped) {
    message = "Finishing the upload of a recording that a reload interrupted…";
  } else {
    message = "Resuming upload of a recording interrupted by a reload…";
  }
  return (
    <div
      className="upload-panel resume"
      role="group"
      aria-label={`Resumed upload of ${item.sessionId}`}
      data-testid="resume-status"
      data-resume-session-id={item.sessionId}
      data-state={state}
      data-started-at={item.startedAt ?? ""}
      data-recorded-until={item.recordedUntil ?? ""}
      data-recorded-seconds={seconds === null ? "" : seconds.toFixed(3)}
      data-bytes-recorded={item.bytesRecorded}
      data-backlog={backlog}
    >
      <p className={`notice ${state === "error" || state === "refused" ? "bad" : "info"}`} role="status">
        {message}
      </p>
      <p className="session-line">
        Session: <code>{item.sessionId}</code>
        {seconds !== null ? <span className="muted"> · {formatDuration(seconds)} recorded</span> : null}
        {state === "uploading" && backlog > 0 ? (
          <span className="muted"> · {backlog.toLocaleString()} bytes left to upload</span>
        ) : null}
        {state !== "uploading" ? (
          <>
            {" "}
            <button type="button" className="button subtle" onClick={onDismiss}>
              Dismiss
            </button>
          </>
        ) : null}
      </p>
      {stats.length > 0 ? (
        <div className="track-list">
          {stats.map((s) => (
            <TrackStatus key={s.track} stats={s} local={item.local[s.track]} />
          ))}
        </div>
      ) : null}
    </div>
  );
}
