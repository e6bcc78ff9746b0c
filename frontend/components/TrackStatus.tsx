"use client";

import type { UploadStats } from "@/lib/upload";
import { formatBytes } from "@/lib/format";

const LABEL: Record<string, string> = { video: "Camera", audio: "Microphone", screen: "Screen" };

function tone(state: UploadStats["state"]): string {
  switch (state) {
    case "uploaded":
      return "ok";
    case "error":
      return "bad";
    case "reconnecting…":
      return "warn";
    default:
      return "busy";
  }
}

export function TrackStatus({ stats }: { stats: UploadStats }) {
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
      {stats.error && stats.state !== "uploaded" ? <p className="track-error">{stats.error}</p> : null}
      {stats.storageError && stats.state !== "uploaded" ? <p className="track-error">{stats.storageError}</p> : null}
    </div>
  );
}
