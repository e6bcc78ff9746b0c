"use client";

import { useCallback, useState, type FormEvent } from "react";
import { getApiToken, setApiToken } from "@/lib/api";
import { Recorder } from "./Recorder";
import { ResumeUploads } from "./ResumeUploads";
import { SessionList } from "./SessionList";

/** The whole page: recording on top, the list of recordings below. */
export function TapedeckApp() {
  const [reloadKey, setReloadKey] = useState(0);
  const [askToken, setAskToken] = useState(false);
  const [token, setToken] = useState("");

  const reload = useCallback(() => setReloadKey((k) => k + 1), []);
  const unauthorized = useCallback(() => {
    setToken(getApiToken() ?? "");
    setAskToken(true);
  }, []);

  const saveToken = (e: FormEvent) => {
    e.preventDefault();
    setApiToken(token.trim() || null);
    setAskToken(false);
    reload();
  };

  return (
    <>
      {askToken ? (
        <form className="card token-form" onSubmit={saveToken} aria-labelledby="token-heading">
          <h2 id="token-heading">Access token needed</h2>
          <p className="muted">This server asks for an access token. It is kept in this browser only.</p>
          <div className="field inline">
            <label htmlFor="api-token">Access token</label>
            <input
              id="api-token"
              type="password"
              autoComplete="off"
              value={token}
              onChange={(e) => setToken(e.target.value)}
            />
            <button type="submit" className="button primary">
              Save token
            </button>
          </div>
        </form>
      ) : null}
      <ResumeUploads onSessionsChanged={reload} />
      <Recorder onSessionsChanged={reload} onUnauthorized={unauthorized} />
      <SessionList reloadKey={reloadKey} onUnauthorized={unauthorized} />
    </>
  );
}
