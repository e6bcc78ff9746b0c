import { afterEach, describe, expect, it, vi } from "vitest";
import { resumeTrack } from "../src/resume.js";
import type { ChunkStore } from "../src/store.js";
import { TrackUploader, type UploaderOptions } from "../src/uploader.js";
import { FakeServer, bytesOf, chunk, freshStore } from "./fakes.js";

const SESSION = "s-0123456789";

function uploader(server: FakeServer, over: Partial<UploaderOptions> = {}): TrackUploader {
  return new TrackUploader({
    track: "video",
    sessionId: SESSION,
    uploadToken: "tok",
    mimeType: "video/webm;codecs=h264",
    url: "ws://tapedeck.test/ws/video",
    socket: server.factory,
    store: null,
    random: () => 0.5,
    initialBackoffMs: 100,
    maxBackoffMs: 1000,
    ...over,
  });
}

/** Let pending promise callbacks (and fake-indexeddb's tasks) run. */
const settle = () => new Promise((resolve) => setTimeout(resolve, 0));

afterEach(() => {
  vi.useRealTimers();
});

describe("TrackUploader over a fake WebSocket", () => {
  it("speaks the protocol: start, bytes from committed, finish, finished", async () => {
    const server = new FakeServer();
    const u = uploader(server);
    u.start(1_700_000_000_000);
    const ws = server.last;
    expect(ws.url).toBe(`ws://tapedeck.test/ws/video?session=${SESSION}&token=tok`);
    ws.open();
    expect(ws.texts()).toEqual([{ type: "start", mimeType: "video/webm;codecs=h264", startedAt: 1_700_000_000_000 }]);
    const a = chunk(1000, 1);
    const b = chunk(500, 2);
    u.push(a);
    u.push(b);
    await settle();
    expect(ws.sent.length).toBe(1); // nothing before `ready`
    ws.say({ type: "ready", committed: 0 });
    expect(await ws.bytes()).toEqual(await bytesOf(a, b));
    expect(u.stats).toMatchObject({ state: "recording", bytesSent: 1500, bytesAcknowledged: 0, backlog: 1500 });
    ws.say({ type: "ack", committed: 1000 });
    expect(u.stats).toMatchObject({ bytesAcknowledged: 1000, backlog: 500 });
    void u.finish();
    expect(ws.texts().at(-1)).toEqual({ type: "finish" });
    ws.say({ type: "finished", committed: 1500 });
    const done = await u.whenSettled;
    expect(done).toMatchObject({ state: "uploaded", bytesAcknowledged: 1500, backlog: 0 });
  });

  it("splits a chunk into frames of at most maxFrameBytes", async () => {
    const server = new FakeServer();
    const u = uploader(server, { maxFrameBytes: 300 });
    u.start(1);
    server.last.open();
    server.last.say({ type: "ready", committed: 0 });
    u.push(chunk(1000, 3));
    await settle();
    const frames = server.last.sent.filter((d) => typeof d !== "string") as Blob[];
    expect(frames.map((f) => f.size)).toEqual([300, 300, 300, 100]);
  });

  it.each([4400, 4401, 4404, 4413])("close %i: refused for good, no reconnect", async (code) => {
    const server = new FakeServer();
    const u = uploader(server);
    u.start(1);
    server.last.open();
    server.last.say({ type: "error", code: "x", message: "because" });
    server.last.drop(code);
    const s = await u.whenSettled;
    expect(s).toMatchObject({ state: "refused", closeCode: code, errorCode: "x" });
    expect(s.error).toContain("because");
    await new Promise((r) => setTimeout(r, 150));
    expect(server.sockets.length).toBe(1);
  });

  it("close 4409 finished: refused; 4409 superseded: an error, not a refusal", async () => {
    for (const [code, state] of [
      ["finished", "refused"],
      ["superseded", "error"],
    ] as const) {
      const server = new FakeServer();
      const u = uploader(server);
      u.start(1);
      server.last.open();
      server.last.say({ type: "error", code, message: code });
      server.last.drop(4409);
      expect(await u.whenSettled).toMatchObject({ state, closeCode: 4409, errorCode: code });
      expect(server.sockets.length).toBe(1);
    }
  });

  it("close 4409 after finish: uploaded if the server holds every byte as finished, else refused", async () => {
    for (const confirmed of [true, false]) {
      const server = new FakeServer();
      const asked: Array<[string, number]> = [];
      const u = uploader(server, {
        confirmFinished: async (track, bytes) => {
          asked.push([track, bytes]);
          return confirmed;
        },
      });
      u.start(1);
      server.last.open();
      server.last.say({ type: "ready", committed: 0 });
      u.push(chunk(10, 1));
      await settle();
      void u.finish();
      // `finished` got lost with the connection; the reconnect is refused with 4409.
      server.last.drop(1006);
      await vi.waitFor(() => expect(server.sockets.length).toBe(2));
      server.last.open();
      server.last.say({ type: "error", code: "finished" });
      server.last.drop(4409);
      const s = await u.whenSettled;
      expect(asked).toEqual([["video", 10]]);
      expect(s.state).toBe(confirmed ? "uploaded" : "refused");
    }
  });

  it.each([1001, 1006, 1011, 1012, 1013, 4408, 4503])(
    "close %i: reconnects and resends from the new ready's committed",
    async (code) => {
      const server = new FakeServer();
      const u = uploader(server);
      u.start(1);
      server.last.open();
      server.last.say({ type: "ready", committed: 0 });
      const a = chunk(100, 1);
      const b = chunk(100, 2);
      u.push(a);
      u.push(b);
      await settle();
      server.last.say({ type: "ack", committed: 60 });
      server.last.drop(code);
      expect(u.stats.state).toBe("reconnecting…");
      expect(u.stats.error).toContain("Retrying");
      await vi.waitFor(() => expect(server.sockets.length).toBe(2));
      const ws = server.last;
      ws.open();
      ws.say({ type: "ready", committed: 150 }); // the server had more than it acknowledged
      expect(await ws.bytes()).toEqual((await bytesOf(a, b)).subarray(150));
      expect(u.stats).toMatchObject({ state: "recording", reconnects: 1, error: null, bytesAcknowledged: 150 });
      u.abort();
    },
  );

  it("reconnects with exponential backoff and jitter, and the delay resets after ready", () => {
    vi.useFakeTimers({ toFake: ["setTimeout", "clearTimeout", "setInterval", "clearInterval", "Date"] });
    const server = new FakeServer();
    const draws = [0, 0.999, 0.5, 0];
    const u = uploader(server, { random: () => draws.shift() ?? 0 });
    u.start(1);
    // initial 100 ms doubling: bases 100, 200, 400; jitter between half and all of it.
    const expected = [50, 199.9, 300];
    for (const delay of expected) {
      const before = server.sockets.length;
      server.last.drop(1006);
      expect(u.stats.nextRetryAt).toBeCloseTo(Date.now() + delay, 5);
      vi.advanceTimersByTime(Math.floor(delay) - 1);
      expect(server.sockets.length).toBe(before); // not before its time
      vi.advanceTimersByTime(2);
      expect(server.sockets.length).toBe(before + 1);
    }
    // A `ready` resets the backoff: the next drop waits the first delay again.
    server.last.open();
    server.last.say({ type: "ready", committed: 0 });
    server.last.drop(1006);
    expect(u.stats.nextRetryAt).toBe(Date.now() + 50);
    expect(u.stats.reconnects).toBe(4);
    u.abort();
  });

  it("refuses a ready that is ahead of what this tab kept, or behind what was acknowledged", async () => {
    const server = new FakeServer();
    const ahead = uploader(server);
    ahead.start(1);
    server.last.open();
    server.last.say({ type: "ready", committed: 5 });
    expect(await ahead.whenSettled).toMatchObject({ state: "refused" });
    expect(server.last.closedByClient?.code).toBe(1000);

    const behind = uploader(server);
    behind.start(1);
    server.last.open();
    server.last.say({ type: "ready", committed: 0 });
    behind.push(chunk(50, 1));
    await settle();
    server.last.say({ type: "ack", committed: 50 });
    server.last.drop(1006);
    await vi.waitFor(() => expect(server.sockets.length).toBe(3));
    server.last.open();
    server.last.say({ type: "ready", committed: 20 });
    const s = await behind.whenSettled;
    expect(s.state).toBe("refused");
    expect(s.error).toContain("lost acknowledged data");
  });

  it("drops a connection that never says ready, and one that stalls", () => {
    vi.useFakeTimers({ toFake: ["setTimeout", "clearTimeout", "setInterval", "clearInterval", "Date"] });
    const server = new FakeServer();
    const u = uploader(server, { readyTimeoutMs: 1000, stallTimeoutMs: 3000 });
    u.start(1);
    server.last.open();
    vi.advanceTimersByTime(1001);
    expect(server.last.closedByClient).toEqual({ code: 4000, reason: "no ready in time" });
    server.last.drop(4000);
    vi.advanceTimersByTime(100);
    expect(server.sockets.length).toBe(2);
    server.last.open();
    server.last.say({ type: "ready", committed: 0 });
    void u.finish(); // bytes (here: the finish) outstanding, and the server goes silent
    vi.advanceTimersByTime(4100);
    expect(server.sockets[1].closedByClient).toEqual({ code: 4000, reason: "stalled" });
    expect(u.stats.state).toBe("reconnecting…");
    u.abort();
  });
});

describe("TrackUploader with IndexedDB (fake-indexeddb)", () => {
  it("stores every chunk before sending it, and deletes the copy once finished", async () => {
    const { store } = await freshStore();
    const server = new FakeServer();
    const u = uploader(server, { store });
    u.start(7, "video/webm");
    server.last.open();
    server.last.say({ type: "ready", committed: 0 });
    const a = chunk(300, 1);
    u.push(a, 1234);
    await vi.waitFor(() => expect(u.stats.bytesSent).toBe(300));
    const [record] = await store.list(SESSION);
    expect(record).toMatchObject({ track: "video", recorded: 300, recordedUntil: 1234, startedAt: 7, uploadToken: "tok" });
    expect(await store.offsets(SESSION, "video")).toEqual([0]);
    server.last.say({ type: "ack", committed: 300 });
    await vi.waitFor(async () => expect((await store.list(SESSION))[0].committed).toBe(300));
    // Acknowledged chunks stay stored (the saved file needs its header) until `finished`.
    expect(await store.offsets(SESSION, "video")).toEqual([0]);
    void u.finish();
    server.last.say({ type: "finished", committed: 300 });
    await u.whenSettled;
    expect(await store.list()).toEqual([]);
    expect(await store.offsets(SESSION, "video")).toEqual([]);
  });

  it("spills over the memory budget and reads spilled chunks back to resend them", async () => {
    const { store } = await freshStore();
    const server = new FakeServer();
    const u = uploader(server, { store, memoryBudgetBytes: 250 });
    u.start(1);
    const chunks = Array.from({ length: 10 }, (_, i) => chunk(100, i));
    for (const c of chunks) u.push(c);
    await vi.waitFor(() => expect(u.stats.bytesStored).toBe(1000));
    // No connection is ready: the backlog is stored, and memory holds only the newest.
    expect(u.stats.backlog).toBe(1000);
    expect(u.stats.bytesInMemory).toBeLessThanOrEqual(250);
    expect(u.stats.bytesInMemory).toBeGreaterThan(0);
    server.last.open();
    server.last.say({ type: "ready", committed: 0 });
    await vi.waitFor(() => expect(u.stats.bytesSent).toBe(1000));
    expect(await server.last.bytes()).toEqual(await bytesOf(...chunks));
    u.abort();
  });

  it("without storage (it failed), keeps unacknowledged chunks in memory whatever the budget", async () => {
    const failing: ChunkStore = {
      ...((await freshStore()).store as ChunkStore),
      begin: async () => undefined,
      append: async () => {
        throw new Error("QuotaExceededError");
      },
      update: async () => undefined,
      setCommitted: async () => undefined,
      remove: async () => undefined,
      read: async () => {
        throw new Error("nothing stored");
      },
      readAll: async () => ({ blob: new Blob([]), start: 0, end: 0 }),
      offsets: async () => [],
      list: async () => [],
    };
    const server = new FakeServer();
    const u = uploader(server, { store: failing, memoryBudgetBytes: 10 });
    u.start(1);
    for (let i = 0; i < 3; i++) u.push(chunk(100, i));
    await vi.waitFor(() => expect(u.stats.bytesRecorded).toBe(300));
    await vi.waitFor(() => expect(u.stats.bytesInMemory).toBe(300));
    expect(u.stats.persistent).toBe(false);
    expect(u.stats.storageError).toContain("QuotaExceededError");
    server.last.open();
    server.last.say({ type: "ready", committed: 0 });
    await vi.waitFor(() => expect(u.stats.bytesSent).toBe(300));
    server.last.say({ type: "ack", committed: 300 });
    expect(u.stats.bytesInMemory).toBe(0);
    u.abort();
  });

  it("resumes after a reload: the next page sends what the server lacks, then finishes", async () => {
    const { store, reopen } = await freshStore();
    const server = new FakeServer();
    const first = uploader(server, { store });
    first.start(1_700_000_000_000, "video/webm;codecs=h264");
    server.last.open();
    server.last.say({ type: "ready", committed: 0 });
    const chunks = [chunk(100, 1), chunk(100, 2), chunk(100, 3)];
    for (const c of chunks) first.push(c, 1_700_000_001_000);
    await vi.waitFor(() => expect(first.stats.bytesStored).toBe(300));
    server.last.say({ type: "ack", committed: 150 });
    await vi.waitFor(async () => expect((await store.list(SESSION))[0]?.committed).toBe(150));
    // The page goes away here: its socket drops, nothing finishes.
    store.close();

    const page2 = await reopen();
    const [record] = await page2.list();
    expect(record).toMatchObject({ sessionId: SESSION, recorded: 300, committed: 150, stopped: false });
    const resumed = await resumeTrack(page2, record, { server: "http://tapedeck.test", socket: server.factory });
    const ws = server.last;
    expect(ws.url).toBe(`ws://tapedeck.test/ws/video?session=${SESSION}&token=tok`);
    ws.open();
    expect(ws.texts()[0]).toEqual({ type: "start", mimeType: "video/webm;codecs=h264", startedAt: 1_700_000_000_000 });
    ws.say({ type: "ready", committed: 180 }); // the server got a bit more than it acknowledged
    await vi.waitFor(() => expect(resumed.stats.bytesSent).toBe(300));
    expect(await ws.bytes()).toEqual((await bytesOf(...chunks)).subarray(180));
    expect(ws.texts().at(-1)).toEqual({ type: "finish" });
    expect(resumed.stats).toMatchObject({ resumed: true, bytesRecorded: 300 });
    ws.say({ type: "finished", committed: 300 });
    expect(await resumed.whenSettled).toMatchObject({ state: "uploaded" });
    expect(await page2.list()).toEqual([]);
  });

  it("a refusal keeps the local copy, marked refused, whole from its header, until discarded", async () => {
    const { store, reopen } = await freshStore();
    const server = new FakeServer();
    const u = uploader(server, { store });
    u.start(1);
    server.last.open();
    server.last.say({ type: "ready", committed: 0 });
    const chunks = [chunk(100, 1), chunk(100, 2)];
    for (const c of chunks) u.push(c);
    await vi.waitFor(() => expect(u.stats.bytesSent).toBe(200));
    server.last.say({ type: "ack", committed: 200 });
    server.last.say({ type: "error", code: "finished", message: "the session was finalized" });
    server.last.drop(4409);
    expect(await u.whenSettled).toMatchObject({ state: "refused", closeCode: 4409, errorCode: "finished" });
    // The recorder still runs: what it hands over is kept too.
    const late = chunk(100, 3);
    u.push(late);
    void u.finish();
    await vi.waitFor(() => expect(u.stats.bytesStored).toBe(300));
    const kept = await u.recording();
    expect(kept).toMatchObject({ start: 0, end: 300, whole: true });
    expect(new Uint8Array(await kept.blob.arrayBuffer())).toEqual(await bytesOf(...chunks, late));
    // A reload sees the refusal and all the chunks (and does not resend them).
    const page2 = await reopen();
    await vi.waitFor(async () => expect((await page2.list())[0]?.refused?.code).toBe("finished"));
    const [record] = await page2.list();
    expect(record).toMatchObject({ recorded: 300, stopped: true });
    expect(record.refused).toMatchObject({ closeCode: 4409 });
    expect((await page2.readAll(SESSION, "video")).end).toBe(300);
    // Only the person's discard deletes it.
    await u.discard();
    expect(await page2.list()).toEqual([]);
    expect(u.stats.discarded).toBe(true);
  });
});
