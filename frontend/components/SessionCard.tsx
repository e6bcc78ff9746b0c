"use client";

import { useEffect, useState } from "react";
import {
  ApiError,
  compileSession,
  deleteSession,
  downloadHref,
  renameSession,
  type Session,
} from "@/lib/api";
import { describeMime, formatBytes, formatDateTime, formatDuration, formatRelative } from "@/lib/format";
import { ErrorNotice } from "./ErrorNotice";
import { Player } from "./Player";

const STATE_TEXT: Record<string, string> = {
  recording: "Recording",
  recorded: "Recorded",
  queued: "Queued",
  compiling: "Compiling",
  ready: "Ready",
  failed: "Failed",
  expired: "Expired",
};

const TRACK_TEXT: Record<string, string> = { video: "Camera", audio: "Microphone", screen: "Screen" };

interface Props {
  session: Session;
  now: number;
  onChanged: (session: Session) => void;
  onDeleted: (id: string) => void;
  onUnauthorized: () => void;
}

export function SessionCard({ session, now, onChanged, onDeleted, onUnauthorized }: Props) {
  const [busy, setBusy] = useState<"compile" | "delete" | "rename" | null>(null);
  const [editing, setEditing] = useState(false);
  const [draft, setDraft] = useState(session.title);
  const [error, setError] = useState<string | null>(null);
  const { id, state } = session;

  // A message about the previous state is stale once the state moves on.
  useEffect(() => {
    setError(null);
  }, [state]);
  const headingId = `session-${id}`;
  const canCompile = state === "recording" || state === "recorded" || state === "failed";
  const compiling = state === "queued" || state === "compiling";
  const href = downloadHref(session);
  const duration = session.output?.durationSeconds ?? session.durationSeconds;

  const report = (e: unknown) => {
    if (e instanceof ApiError && e.status === 401) onUnauthorized();
    setError(e instanceof Error ? e.message : String(e));
  };

  const compile = async () => {
    setBusy("compile");
    setError(null);
    try {
      const res = await compileSession(id);
      onChanged({ ...session, state: res.state ?? "queued", progress: 0, error: null });
    } catch (e) {
      report(e);
    } finally {
      setBusy(null);
    }
  };

  const remove = async () => {
    const what = state === "recording" ? "This recording is still in progress. " : "";
    if (!window.confirm(`${what}Delete recording “${title}”? Its files and video will be removed for good.`)) return;
    setBusy("delete");
    setError(null);
    try {
      await deleteSession(id);
      onDeleted(id);
    } catch (e) {
      if (e instanceof ApiError && e.status === 404) {
        onDeleted(id);
        return;
      }
      report(e);
      setBusy(null);
    }
  };

  const rename = async (e: React.FormEvent) => {
    e.preventDefault();
    setBusy("rename");
    setError(null);
    try {
      const changed = await renameSession(id, draft);
      onChanged(changed);
      setEditing(false);
    } catch (err) {
      report(err);
    } finally {
      setBusy(null);
    }
  };

  const title = session.title || id;
  const media = session.media;

  const pct = Math.round(Math.min(1, Math.max(0, session.progress || 0)) * 100);

  return (
    <li
      className={`session state-${state}`}
      data-testid="session-row"
      data-session-id={id}
      data-state={state}
      aria-labelledby={headingId}
    >
      <div className="session-head">
        {media?.posterUrl ? (
          <img className="poster" src={media.posterUrl} alt="" width={160} height={90} data-testid="session-poster" />
        ) : null}
        {editing ? (
          <form className="rename" onSubmit={(e) => void rename(e)}>
            <label>
              <span className="sr-only">Title of recording {id}</span>
              <input
                value={draft}
                onChange={(e) => setDraft(e.currentTarget.value)}
                maxLength={200}
                required
                autoFocus
                data-testid="title-input"
              />
            </label>
            <button type="submit" className="button primary" disabled={busy !== null} aria-busy={busy === "rename"}>
              Save
            </button>
            <button type="button" className="button subtle" onClick={() => setEditing(false)}>
              Cancel
            </button>
          </form>
        ) : (
          <h3 id={headingId} className="session-title" data-testid="session-title">
            {title}
          </h3>
        )}
        <span className={`badge badge-${state}`} data-testid="session-state">
          {STATE_TEXT[state] ?? state}
        </span>
      </div>

      {editing ? <h3 id={headingId} className="sr-only">{title}</h3> : null}
      <p className="session-id muted">
        <code>{id}</code>{" "}
        {!editing ? (
          <button
            type="button"
            className="button subtle small"
            onClick={() => {
              setDraft(session.title);
              setEditing(true);
            }}
            aria-label={`Rename ${title}`}
          >
            Rename
          </button>
        ) : null}
      </p>

      <dl className="session-meta">
        <div>
          <dt>Size</dt>
          <dd>{formatBytes(session.output?.size ?? session.bytes)}</dd>
        </div>
        <div>
          <dt>Duration</dt>
          <dd>{formatDuration(duration)}</dd>
        </div>
        <div>
          <dt>Created</dt>
          <dd>
            <time dateTime={session.createdAt} title={session.createdAt}>
              {formatDateTime(session.createdAt)}
            </time>
          </dd>
        </div>
        <div>
          <dt>Expires</dt>
          <dd>
            {session.expiresAt ? (
              <time dateTime={session.expiresAt} title={formatDateTime(session.expiresAt)}>
                {now ? formatRelative(session.expiresAt, now) : formatDateTime(session.expiresAt)}
              </time>
            ) : (
              "never"
            )}
          </dd>
        </div>
      </dl>

      {session.tracks?.length ? (
        <ul className="session-tracks" aria-label="Tracks">
          {session.tracks.map((t) => (
            <li key={t.name}>
              <span>{TRACK_TEXT[t.name] ?? t.name}</span> {formatBytes(t.bytes)}
              {t.mimeType ? <span className="muted"> · {describeMime(t.mimeType)}</span> : null}
              {!t.finished ? <span className="muted"> · still writing</span> : null}
            </li>
          ))}
        </ul>
      ) : null}

      {compiling ? (
        <div className="compile-progress">
          <span className="progress-text">
            {state === "queued" ? "Waiting to compile…" : `Compiling… ${pct} %`}
          </span>
          {state === "queued" ? (
            <progress max={1} aria-label="Compile progress" />
          ) : (
            <progress
              max={1}
              value={session.progress || 0}
              aria-label="Compile progress"
              aria-valuetext={`${pct} percent`}
            />
          )}
        </div>
      ) : null}

      {state === "failed" && session.error ? (
        <p className="notice bad">
          Compiling failed: <span className="error-text">{session.error}</span>
        </p>
      ) : null}

      {state === "ready" ? (
        <div className="ready">
          <Player
            src={href}
            hlsUrl={media?.hlsUrl}
            posterUrl={media?.posterUrl}
            storyboardUrl={media?.storyboardUrl}
            label={`Recording ${id}`}
          />
          {session.output ? (
            <p className="muted output-line">
              MP4 · {formatBytes(session.output.size)} · {formatDuration(session.output.durationSeconds)}
              {session.output.videoCodec ? ` · ${session.output.videoCodec}` : ""}
              {session.output.audioCodec ? ` / ${session.output.audioCodec}` : ""}
            </p>
          ) : null}
        </div>
      ) : null}

      <div className="buttons">
        {state === "ready" ? (
          <a className="button primary" href={href} download>
            Download
          </a>
        ) : null}
        {canCompile ? (
          <button
            type="button"
            className="button primary"
            onClick={() => void compile()}
            disabled={busy !== null}
            aria-busy={busy === "compile"}
          >
            Compile
          </button>
        ) : null}
        <button
          type="button"
          className="button subtle"
          onClick={() => void remove()}
          disabled={busy !== null}
          aria-busy={busy === "delete"}
        >
          Delete
        </button>
      </div>

      <ErrorNotice error={error} />
    </li>
  );
}
