"use client";

import { useCallback, useEffect, useRef, useState } from "react";
import { ApiError, getSession, listSessions, type Session } from "@/lib/api";
import { awaitingExtras, mergeSession } from "@/lib/media";
import { SessionCard } from "./SessionCard";
import { ErrorNotice } from "./ErrorNotice";

const PAGE = 50;
const FAST_POLL_MS = 500; // queued / compiling: progress bar
const SLOW_POLL_MS = 2000; // recording: to learn when it becomes "recorded"; ready: its extras

interface Props {
  /** Bumped by the parent when the list should be reloaded. */
  reloadKey: number;
  onUnauthorized: () => void;
}

export function SessionList({ reloadKey, onUnauthorized }: Props) {
  const [items, setItems] = useState<Session[]>([]);
  const [nextCursor, setNextCursor] = useState<string | null>(null);
  const [loading, setLoading] = useState(false);
  const [loaded, setLoaded] = useState(false);
  const [error, setError] = useState<string | null>(null);
  const [now, setNow] = useState(0);
  const [search, setSearch] = useState("");
  const [query, setQuery] = useState("");
  const itemsRef = useRef<Session[]>([]);
  itemsRef.current = items;

  const fail = useCallback(
    (e: unknown) => {
      if (e instanceof ApiError && e.status === 401) onUnauthorized();
      setError(e instanceof Error ? e.message : String(e));
    },
    [onUnauthorized],
  );

  const load = useCallback(async () => {
    setLoading(true);
    try {
      const page = await listSessions(PAGE, null, query);
      setItems(page.items ?? []);
      setNextCursor(page.nextCursor ?? null);
      setError(null);
    } catch (e) {
      fail(e);
    } finally {
      setLoading(false);
      setLoaded(true);
      setNow(Date.now());
    }
  }, [fail, query]);

  const loadMore = async () => {
    if (!nextCursor) return;
    setLoading(true);
    try {
      const page = await listSessions(PAGE, nextCursor, query);
      setItems((prev) => {
        const seen = new Set(prev.map((s) => s.id));
        return [...prev, ...(page.items ?? []).filter((s) => !seen.has(s.id))];
      });
      setNextCursor(page.nextCursor ?? null);
      setError(null);
    } catch (e) {
      fail(e);
    } finally {
      setLoading(false);
    }
  };

  useEffect(() => {
    void load();
  }, [load, reloadKey]);

  const replace = useCallback((s: Session) => {
    setItems((prev) => prev.map((x) => (x.id === s.id ? mergeSession(x, s) : x)));
  }, []);

  const remove = useCallback((id: string) => {
    setItems((prev) => prev.filter((x) => x.id !== id));
  }, []);

  const refreshOne = useCallback(
    async (id: string) => {
      try {
        replace(await getSession(id));
      } catch (e) {
        if (e instanceof ApiError && e.status === 404) remove(id);
      }
    },
    [remove, replace],
  );

  // Poll the sessions that are moving. One timer; each tick fetches the busy ones. A ready
  // session's poster, storyboard and HLS follow it by seconds: polled slowly for a while.
  const hasFast = items.some((s) => s.state === "queued" || s.state === "compiling");
  const hasSlow = items.some((s) => s.state === "recording" || awaitingExtras(s, Date.now()));
  useEffect(() => {
    if (!hasFast && !hasSlow) return;
    let cancelled = false;
    let timer: ReturnType<typeof setTimeout>;
    let tick = 0;
    const run = async () => {
      tick += 1;
      const slowTurn = tick % Math.round(SLOW_POLL_MS / FAST_POLL_MS) === 0;
      const busy = itemsRef.current.filter(
        (s) =>
          s.state === "queued" ||
          s.state === "compiling" ||
          (slowTurn && (s.state === "recording" || awaitingExtras(s, Date.now()))),
      );
      await Promise.all(busy.map((s) => refreshOne(s.id)));
      if (!cancelled) timer = setTimeout(run, FAST_POLL_MS);
    };
    timer = setTimeout(run, hasFast ? FAST_POLL_MS : SLOW_POLL_MS);
    return () => {
      cancelled = true;
      clearTimeout(timer);
    };
  }, [hasFast, hasSlow, refreshOne]);

  // Keep relative times ("expires in 3 hours") fresh.
  useEffect(() => {
    const t = setInterval(() => setNow(Date.now()), 30_000);
    return () => clearInterval(t);
  }, []);

  return (
    <section className="card" aria-labelledby="sessions-heading" aria-busy={loading}>
      <div className="card-head">
        <h2 id="sessions-heading">Recordings</h2>
        <button type="button" className="button subtle" onClick={() => void load()} disabled={loading}>
          Refresh
        </button>
      </div>
      <form
        className="search"
        role="search"
        onSubmit={(e) => {
          e.preventDefault();
          setQuery(search.trim());
        }}
      >
        <label htmlFor="session-search" className="sr-only">
          Search recordings by title
        </label>
        <input
          id="session-search"
          type="search"
          value={search}
          maxLength={200}
          placeholder="Search titles"
          onChange={(e) => setSearch(e.currentTarget.value)}
        />
        <button type="submit" className="button subtle">
          Search
        </button>
      </form>
      <ErrorNotice error={error} />
      {loaded && items.length === 0 && !error ? (
        <p className="muted empty">{query ? "No recordings match." : "No recordings yet."}</p>
      ) : null}
      {!loaded ? <p className="muted empty">Loading…</p> : null}
      <ul className="session-list">
        {items.map((s) => (
          <SessionCard
            key={s.id}
            session={s}
            now={now}
            onChanged={(changed) => {
              replace(changed);
              void refreshOne(changed.id);
            }}
            onDeleted={remove}
            onUnauthorized={onUnauthorized}
          />
        ))}
      </ul>
      {nextCursor ? (
        <div className="buttons">
          <button type="button" className="button" onClick={() => void loadMore()} disabled={loading}>
            Load more
          </button>
        </div>
      ) : null}
    </section>
  );
}
