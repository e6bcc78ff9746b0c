"use client";

import { useState } from "react";
import type { LocalRecording, UploadStats } from "@tapedeck/recorder";
import { formatBytes } from "@/lib/format";

/** What the page can do with this browser's copy of a track the server did not take. */
export interface LocalCopy {
  sessionId: string;
  /** The track's bytes as kept here, in order. */
  save: () => Promise<LocalRecording>;
  /** Delete this browser's copy (after the person confirmed). */
  discard: () => Promise<void>;
  /** False while the recorder still feeds the copy (discarding then would be premature). */
  canDiscard: boolean;
}

const LABEL: Record<string, string> = { video: "Camera", audio: "Microphone", screen: "Screen" };

function tone(state: UploadStats["state"]): string {
  switch (state) {
    case "uploaded":
      return "ok";
    case "error":
    case "refused":
      return "bad";
    case "reconnecting…":
      return "warn";
    default:
      return "busy";
  }
}

export function TrackStatus({ stats, local }: { stats: UploadStats; local?: LocalCopy }) {
  const retryIn =
    stats.state === "reconnecting…" && stats.nextRetryAt !== null
      ? Math.max(0, Math.ceil((stats.nextRetryAt - Date.now()) / 1000))
      : null;
  return (
    <div
      className={`track-status tone-${tone(stats.state)}`}
      data-testid={`track-status-${stats.track}`}
      data-state={stats.state}
      data-bytes-recorded={stats.bytesRecorded}
      data-bytes-sent={stats.bytesSent}
      data-bytes-acknowledged={stats.bytesAcknowledged}
      data-backlog={stats.backlog}
      data-reconnects={stats.reconnects}
      data-bytes-stored={stats.bytesStored}
      data-bytes-in-memory={stats.bytesInMemory}
      data-persistent={String(stats.persistent)}
      data-resumed={String(stats.resumed)}
      data-started-at={stats.startedAt ?? ""}
      data-recorded-until={stats.recordedUntil ?? ""}
      data-error-code={stats.errorCode ?? ""}
      data-close-code={stats.closeCode ?? ""}
      data-discarded={String(stats.discarded)}
    >
      <div className="track-status-head">
        <span className="track-name">{LABEL[stats.track] ?? stats.track}</span>{" "}
        <span className="track-state">{stats.state}</span>
        {retryIn !== null && retryIn > 0 ? <span className="muted"> (next try in {retryIn} s)</span> : null}
      </div>
      <dl className="track-numbers">
        <div>
          <dt>Sent</dt>
          <dd>{formatBytes(stats.bytesSent)}</dd>
        </div>
        <div>
          <dt>Acknowledged</dt>
          <dd>{formatBytes(stats.bytesAcknowledged)}</dd>
        </div>
        <div>
          <dt>Backlog</dt>
          <dd>{formatBytes(stats.backlog)}</dd>
        </div>
        {stats.backlog > 0 ? (
          <div>
            <dt>Backlog in memory</dt>
            <dd title="The rest of the backlog is saved in this browser (IndexedDB)">
              {formatBytes(stats.bytesInMemory)}
            </dd>
          </div>
        ) : null}
        {stats.reconnects > 0 ? (
          <div>
            <dt>Reconnects</dt>
            <dd>{stats.reconnects}</dd>
          </div>
        ) : null}
      </dl>
      {stats.state === "refused" ? (
        <p className="track-error" role="alert">
          The server refused this recording: {stats.error ?? "no reason given"}
          {stats.errorCode ? ` (${stats.errorCode})` : ""}
        </p>
      ) : stats.error && stats.state !== "uploaded" ? (
        <p className="track-error">{stats.error}</p>
      ) : null}
      {stats.storageError && stats.state !== "uploaded" ? <p className="track-error">{stats.storageError}</p> : null}
      {local && (stats.state === "refused" || stats.state === "error") && !stats.discarded && stats.bytesRecorded > 0 ? (
        <KeptCopy stats={stats} local={local} />
      ) : null}
    </div>
  );
}

/** Save or discard the copy this browser kept of a track the server did not take. */
function KeptCopy({ stats, local }: { stats: UploadStats; local: LocalCopy }) {
  const [busy, setBusy] = useState(false);
  const [message, setMessage] = useState<{ text: string; bad: boolean } | null>(null);
  const label = LABEL[stats.track] ?? stats.track;

  const save = async () => {
    setBusy(true);
    setMessage(null);
    try {
      const kept = await local.save();
      if (kept.blob.size === 0) {
        setMessage({ text: "This browser holds none of this recording any more.", bad: true });
        return;
      }
      const url = URL.createObjectURL(kept.blob);
      const a = document.createElement("a");
      a.href = url;
      a.download = `tapedeck-${local.sessionId}-${stats.track}.webm`;
      document.body.appendChild(a);
      a.click();
      a.remove();
      // The download has its own copy once it started; give it time to begin.
      setTimeout(() => URL.revokeObjectURL(url), 60_000);
      setMessage({
        text: kept.whole
          ? `Saved ${formatBytes(kept.blob.size)}: the ${label.toLowerCase()} recording as recorded.`
          : `Saved ${formatBytes(kept.blob.size)} (bytes ${kept.start.toLocaleString()} to ${kept.end.toLocaleString()}): only part of the recording was kept here, so the file may not play on its own.`,
        bad: !kept.whole,
      });
    } catch (e) {
      setMessage({ text: `Could not save the recording: ${e instanceof Error ? e.message : String(e)}`, bad: true });
    } finally {
      setBusy(false);
    }
  };

  const discard = async () => {
    if (!window.confirm(`Delete this browser's copy of the ${label.toLowerCase()} recording? It cannot be undone.`)) return;
    setBusy(true);
    setMessage(null);
    try {
      await local.discard();
    } catch (e) {
      setMessage({ text: e instanceof Error ? e.message : String(e), bad: true });
    } finally {
      setBusy(false);
    }
  };

  return (
    <div className="kept-copy" role="group" aria-label={`${label} recording kept in this browser`}>
      <p className="muted">
        {stats.persistent
          ? "This browser keeps the whole recording until you save or discard it."
          : "This browser could not store the recording, so it kept only the part the server had not confirmed (in memory, until this tab closes): a saved file starts part-way and may not play on its own."}
      </p>
      <div className="buttons">
        <button type="button" className="button primary" onClick={() => void save()} disabled={busy}>
          Save recording to this computer<span className="sr-only"> ({label.toLowerCase()})</span>
        </button>
        {local.canDiscard ? (
          <button type="button" className="button danger" onClick={() => void discard()} disabled={busy}>
            Discard<span className="sr-only"> {label.toLowerCase()} recording</span>
          </button>
        ) : null}
      </div>
      {message ? (
        <p className={message.bad ? "track-error" : "muted"} role="status">
          {message.text}
        </p>
      ) : null}
    </div>
  );
}
