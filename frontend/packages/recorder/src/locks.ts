// One tab at a time uploads a session: the tab that records it, or after a reload
// or crash the first page that resumes it. Otherwise a second tab opened during a
// recording would resume the live upload and take its sockets over (4409).
//
// Web Locks (`navigator.locks`) when available: the browser releases a lock when
// its page goes away, also when the tab crashes. Without it, a heartbeat in
// localStorage stands in: an owner that has not written it for HEARTBEAT_STALE_MS
// is taken to be gone.

const PREFIX = "tapedeck.upload.";
const HEARTBEAT_MS = 2000;
const HEARTBEAT_STALE_MS = 8000;

export type Release = () => void;

function lockName(sessionId: string): string {
  return `${PREFIX}${sessionId}`;
}

function webLocks(): LockManager | null {
  return typeof navigator !== "undefined" && navigator.locks ? navigator.locks : null;
}

/**
 * Own the upload of `sessionId`. Resolves with a release function once the lock is
 * held: at once for a new session, or when the previous owner (e.g. the page before
 * a reload) has gone. Rejects with an AbortError when `signal` aborts first.
 */
export function lockSession(sessionId: string, signal?: AbortSignal): Promise<Release> {
  const locks = webLocks();
  if (locks) {
    return new Promise<Release>((resolve, reject) => {
      let release!: () => void;
      const held = new Promise<void>((r) => {
        release = r;
      });
      locks
        .request(lockName(sessionId), { signal }, () => {
          resolve(release);
          return held;
        })
        .catch(reject);
    });
  }
  return heartbeatLock(sessionId, signal);
}

function heartbeatLock(sessionId: string, signal?: AbortSignal): Promise<Release> {
  const key = lockName(sessionId);
  const read = (): number => {
    try {
      return Number(window.localStorage.getItem(key)) || 0;
    } catch {
      return 0;
    }
  };
  const write = (v: number | null) => {
    try {
      if (v === null) window.localStorage.removeItem(key);
      else window.localStorage.setItem(key, String(v));
    } catch {
      // no storage: nothing to coordinate with
    }
  };
  return new Promise<Release>((resolve, reject) => {
    const attempt = () => {
      if (signal?.aborted) {
        reject(new DOMException("aborted", "AbortError"));
        return;
      }
      const age = Date.now() - read();
      if (age < HEARTBEAT_STALE_MS) {
        setTimeout(attempt, HEARTBEAT_STALE_MS - age + 50);
        return;
      }
      write(Date.now());
      const beat = setInterval(() => write(Date.now()), HEARTBEAT_MS);
      resolve(() => {
        clearInterval(beat);
        write(null);
      });
    };
    attempt();
  });
}
