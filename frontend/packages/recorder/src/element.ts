// <tapedeck-recorder server="https://tapedeck.example.com" session-id="…" upload-token="…">
// A drop-in recorder for any page: a preview, a Start/Stop button and the upload's status.
// Importing this module defines the element (where custom elements exist).
//
// Attributes: server (required), session-id and upload-token (from the embedding site's
// backend, which created the session with its API token; without them the element asks
// the server for a session, which works only against a server without an API token and
// with the page's origin in TAPEDECK_CORS_ORIGINS), source ("camera", default, or
// "screen"). Events (bubbling, composed): tapedeck-state, tapedeck-progress,
// tapedeck-error, tapedeck-finished, with the package's event objects as `detail`.

import { record, type Recording, type RecordingState } from "./recorder.js";
import { lockSession } from "./locks.js";
import { resumeTrack } from "./resume.js";
import { IndexedDBChunkStore } from "./store.js";
import type { TrackName, UploadStats } from "./types.js";

const TEMPLATE = `
<style>
  :host { display: block; font: 14px/1.4 system-ui, sans-serif; color: #1a1a1a; }
  video { width: 100%; max-height: 360px; background: #111; border-radius: 6px; }
  button { font: inherit; padding: 0.4em 1em; border-radius: 4px; border: 1px solid #555; cursor: pointer; }
  button:focus-visible { outline: 3px solid #1a5fb4; outline-offset: 2px; }
  .tracks { margin: 0.5em 0 0; padding: 0; list-style: none; }
  .bad { color: #a51d2d; }
</style>
<video part="preview" muted playsinline aria-label="Live preview"></video>
<p><button type="button" part="button">Start recording</button></p>
<p role="status" aria-live="polite" part="status"></p>
<ul class="tracks" part="tracks"></ul>
`;

const LABEL: Record<string, string> = { video: "Camera", audio: "Microphone", screen: "Screen" };

export class TapedeckRecorderElement extends HTMLElement {
  static readonly observedAttributes = ["server", "session-id", "upload-token", "source"];

  /** The current (or last) recording. */
  recording: Recording | null = null;
  private readonly root: ShadowRoot;
  private readonly video: HTMLVideoElement;
  private readonly button: HTMLButtonElement;
  private readonly status: HTMLElement;
  private readonly list: HTMLElement;
  private readonly tracks = new Map<TrackName, UploadStats>();
  private state: RecordingState | "idle" = "idle";
  private resumeAbort: AbortController | null = null;
  /** The element created the session itself (so it may create another one). */
  private ownSession = false;

  constructor() {
    super();
    this.root = this.attachShadow({ mode: "open" });
    this.root.innerHTML = TEMPLATE;
    this.video = this.root.querySelector("video") as HTMLVideoElement;
    this.button = this.root.querySelector("button") as HTMLButtonElement;
    this.status = this.root.querySelector('[role="status"]') as HTMLElement;
    this.list = this.root.querySelector(".tracks") as HTMLElement;
    this.button.addEventListener("click", () => void this.toggle());
  }

  /** The page handed over a new session after a recording ended: ready to record again. */
  attributeChangedCallback(name: string, _old: string | null, value: string | null): void {
    const ended = this.state === "finished" || this.state === "failed";
    if (name !== "session-id" || !value || !this.recording || !ended || this.button.disabled) return;
    if (value === this.recording.sessionId) return;
    this.ownSession = false;
    this.state = "idle";
    this.setAttribute("data-state", "idle");
    this.renderButton();
    this.say("", false);
  }

  connectedCallback(): void {
    this.setAttribute("data-state", this.state);
    void this.resumeStored();
  }

  disconnectedCallback(): void {
    this.resumeAbort?.abort();
  }

  /** Start recording (as the button does). */
  async start(): Promise<void> {
    const running = this.state !== "idle" && this.state !== "finished" && this.state !== "failed";
    if (running) return;
    const server = this.getAttribute("server") ?? "";
    if (!server) {
      this.fail("The recorder has no server attribute.");
      return;
    }
    if (this.state === "finished" && this.recording) {
      // A session holds one recording: the server refuses more once its tracks finished.
      if (!this.ownSession) {
        this.say("This session is recorded. Recording again needs a new session from the page.", true);
        return;
      }
      this.removeAttribute("session-id");
      this.removeAttribute("upload-token");
    }
    let sessionId = this.getAttribute("session-id") ?? "";
    let uploadToken = this.getAttribute("upload-token") ?? "";
    this.button.disabled = true;
    if (!sessionId || !uploadToken) {
      try {
        // No body and no Content-Type: a "simple" CORS request, without a preflight.
        const res = await fetch(`${server.replace(/\/+$/, "")}/api/sessions`, {
          method: "POST",
          headers: { Accept: "application/json" },
        });
        if (!res.ok) throw new Error(`HTTP ${res.status}`);
        const created = (await res.json()) as { id: string; uploadToken: string };
        sessionId = created.id;
        uploadToken = created.uploadToken;
        this.ownSession = true;
        this.setAttribute("session-id", sessionId);
        this.setAttribute("upload-token", uploadToken);
      } catch (e) {
        this.button.disabled = false;
        this.fail(`Could not start a recording on the server (${e instanceof Error ? e.message : String(e)}).`);
        return;
      }
    }
    this.tracks.clear();
    this.renderTracks();
    const source = this.getAttribute("source") === "screen" ? "screen" : "camera";
    const rec = record({ server, sessionId, uploadToken, source });
    this.recording = rec;
    rec.on("state", (ev) => {
      this.state = ev.state;
      this.setAttribute("data-state", ev.state);
      if (ev.state === "recording" && rec.stream && this.video.srcObject !== rec.stream) {
        this.video.srcObject = rec.stream;
        this.video.play().catch(() => undefined);
      }
      if (ev.state === "uploading" || ev.state === "finished" || ev.state === "failed") this.video.srcObject = null;
      this.renderButton();
      this.dispatch("tapedeck-state", ev);
    });
    rec.on("progress", (s) => {
      this.tracks.set(s.track, s);
      this.renderTracks();
      this.dispatch("tapedeck-progress", s);
    });
    rec.on("error", (e) => {
      this.say(e.message, true);
      this.dispatch("tapedeck-error", e);
    });
    rec.on("finished", (r) => {
      if (r.tracks.length > 0) {
        this.say(r.ok ? "Recording uploaded." : "The upload did not complete; this browser keeps the recording.", !r.ok);
      }
      this.dispatch("tapedeck-finished", r);
    });
    this.say("Starting…", false);
    this.setAttribute("data-session-id", sessionId);
  }

  /** Stop recording (as the button does); resolves once the uploads are through. */
  async stop(): Promise<void> {
    await this.recording?.stop();
  }

  private async toggle(): Promise<void> {
    if (this.state === "recording") await this.stop();
    else await this.start();
  }

  /** Finish uploads of this session that an earlier page left behind (a reload). */
  private async resumeStored(): Promise<void> {
    const sessionId = this.getAttribute("session-id");
    const server = this.getAttribute("server");
    if (!sessionId || !server || this.recording) return;
    const store = await IndexedDBChunkStore.open();
    if (!store) return;
    const records = (await store.list(sessionId).catch(() => [])).filter((r) => !r.refused);
    if (records.length === 0) return;
    const ctrl = new AbortController();
    this.resumeAbort = ctrl;
    let release: () => void;
    try {
      release = await lockSession(sessionId, ctrl.signal);
    } catch {
      return;
    }
    try {
      const again = (await store.list(sessionId)).filter((r) => !r.refused);
      if (again.length === 0 || ctrl.signal.aborted) return;
      this.say("Finishing the upload of a recording that a reload interrupted…", false);
      const uploaders = await Promise.all(again.map((r) => resumeTrack(store, r, { server })));
      for (const u of uploaders) {
        u.subscribe((s) => {
          this.tracks.set(s.track, s);
          this.renderTracks();
          this.dispatch("tapedeck-progress", s);
        });
      }
      const results = await Promise.all(uploaders.map((u) => u.whenSettled));
      const ok = results.every((r) => r.state === "uploaded");
      this.say(ok ? "Recording uploaded." : "The upload did not complete; this browser keeps the recording.", !ok);
      this.dispatch("tapedeck-finished", { sessionId, ok, tracks: results });
    } finally {
      release();
    }
  }

  private renderButton(): void {
    const recording = this.state === "recording" || this.state === "stopping";
    this.button.textContent = recording ? "Stop recording" : "Start recording";
    this.button.disabled = this.state === "starting" || this.state === "stopping" || this.state === "uploading";
    if (this.state === "recording") this.say("Recording.", false);
    if (this.state === "uploading") this.say("Finishing the upload…", false);
  }

  private renderTracks(): void {
    this.list.replaceChildren(
      ...[...this.tracks.values()].map((s) => {
        const li = document.createElement("li");
        li.dataset.testid = `track-status-${s.track}`;
        li.dataset.state = s.state;
        li.dataset.bytesAcknowledged = String(s.bytesAcknowledged);
        li.dataset.backlog = String(s.backlog);
        li.textContent = `${LABEL[s.track] ?? s.track}: ${s.state}, ${s.bytesAcknowledged.toLocaleString()} bytes uploaded`;
        if (s.error && s.state !== "uploaded") li.textContent += ` (${s.error})`;
        return li;
      }),
    );
  }

  private say(text: string, bad: boolean): void {
    this.status.textContent = text;
    this.status.className = bad ? "bad" : "";
  }

  private fail(message: string): void {
    this.say(message, true);
    this.dispatch("tapedeck-error", { message });
  }

  private dispatch(type: string, detail: unknown): void {
    this.dispatchEvent(new CustomEvent(type, { detail, bubbles: true, composed: true }));
  }
}

/** Define <tapedeck-recorder> (once; safe to call again). */
export function defineRecorderElement(name = "tapedeck-recorder"): void {
  if (typeof customElements !== "undefined" && !customElements.get(name)) {
    customElements.define(name, TapedeckRecorderElement);
  }
}

defineRecorderElement();
