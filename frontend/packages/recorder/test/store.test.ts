import { describe, expect, it } from "vitest";
import { StoreQueue } from "../src/queue.js";
import { bytesOf, chunk, freshStore } from "./fakes.js";

describe("IndexedDBChunkStore", () => {
  it("stores gap-free chunks with their record, atomically", async () => {
    const { store } = await freshStore();
    await store.begin({ sessionId: "s1", track: "audio", uploadToken: "t", mimeType: "audio/webm", startedAt: 5 });
    await store.append("s1", "audio", 0, chunk(10, 1), 100);
    await store.append("s1", "audio", 10, chunk(20, 2), 200);
    // A gap (or an unknown upload) is never stored.
    await expect(store.append("s1", "audio", 50, chunk(5, 3), 300)).rejects.toBeDefined();
    await expect(store.append("nope", "audio", 0, chunk(5, 3), 300)).rejects.toBeDefined();
    const [record] = await store.list("s1");
    expect(record).toMatchObject({ recorded: 30, recordedUntil: 200, committed: 0 });
    expect(await store.offsets("s1", "audio")).toEqual([0, 10]);
    const all = await store.readAll("s1", "audio");
    expect([all.start, all.end]).toEqual([0, 30]);
    expect(new Uint8Array(await all.blob.arrayBuffer())).toEqual(await bytesOf(chunk(10, 1), chunk(20, 2)));
    expect((await store.read("s1", "audio", 10)).size).toBe(20);
    await expect(store.read("s1", "audio", 5)).rejects.toThrow(/missing/);
    await store.setCommitted("s1", "audio", 25);
    await store.setCommitted("s1", "audio", 5); // never backwards
    expect((await store.list("s1"))[0].committed).toBe(25);
    await store.remove("s1", "audio");
    expect(await store.list()).toEqual([]);
    expect(await store.offsets("s1", "audio")).toEqual([]);
  });
});

describe("StoreQueue", () => {
  it("runs operations one after another, in order, and reports failures", async () => {
    const { store } = await freshStore();
    const queue = new StoreQueue(store);
    const order: number[] = [];
    const slow = queue.run(async () => {
      await new Promise((r) => setTimeout(r, 20));
      order.push(1);
    });
    const failing = queue.run(async () => {
      order.push(2);
      throw new Error("quota");
    });
    queue.then(async () => {
      order.push(3);
    });
    await queue.idle;
    expect(order).toEqual([1, 2, 3]);
    expect([await slow, await failing]).toEqual([true, false]);
    expect(await new StoreQueue(null).run(async () => undefined)).toBe(false);
  });
});
