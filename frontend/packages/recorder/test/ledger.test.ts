import { describe, expect, it } from "vitest";
import { ChunkLedger } from "../src/ledger.js";

describe("ChunkLedger", () => {
  it("counts received, kept, sent and acknowledged bytes", () => {
    const l = new ChunkLedger();
    expect(l.receive(100)).toBe(0);
    expect(l.receive(50)).toBe(100);
    expect(l.received).toBe(150);
    expect(l.kept).toBe(0); // nothing is sendable before it is kept
    l.keep(0, 100);
    l.markStored(100);
    l.keep(100, 50);
    expect([l.kept, l.stored]).toEqual([150, 100]);
    l.markSent(150);
    expect(l.backlog).toBe(150);

    // An ack inside the first chunk releases nothing; its end releases that chunk.
    expect(l.acknowledge(60)).toEqual({ advanced: true, released: [] });
    expect(l.acknowledge(100)).toEqual({ advanced: true, released: [0] });
    expect(l.backlog).toBe(50);
    // Acks never go back, and never past what is kept.
    expect(l.acknowledge(40)).toEqual({ advanced: false, released: [] });
    expect(l.acknowledge(10_000)).toEqual({ advanced: true, released: [100] });
    expect(l.committed).toBe(150);
    expect(l.pending).toEqual([]);
  });

  it("finds the chunk holding a byte", () => {
    const l = new ChunkLedger();
    for (const size of [10, 20, 30]) l.keep(l.receive(size), size);
    expect(l.chunkAt(0)).toEqual({ start: 0, end: 10 });
    expect(l.chunkAt(9)).toEqual({ start: 0, end: 10 });
    expect(l.chunkAt(10)).toEqual({ start: 10, end: 30 });
    expect(l.chunkAt(59)).toEqual({ start: 30, end: 60 });
    expect(l.chunkAt(60)).toBeNull();
    l.acknowledge(30);
    expect(l.chunkAt(5)).toBeNull(); // acknowledged chunks are gone
    expect(l.chunkAt(45)).toEqual({ start: 30, end: 60 });
  });

  it("resumes from storage: sends from the last ack, skipping wholly acknowledged chunks", () => {
    const l = ChunkLedger.resumed({ recorded: 60, committed: 25, offsets: [30, 0, 10], recordedUntil: 5 });
    expect([l.received, l.kept, l.stored]).toEqual([60, 60, 60]);
    expect([l.committed, l.sent]).toEqual([25, 25]);
    expect(l.pending).toEqual([10, 30]);
    expect(l.chunkAt(25)).toEqual({ start: 10, end: 30 });
  });

  it("resumes when an older version deleted acknowledged chunks", () => {
    const l = ChunkLedger.resumed({ recorded: 60, committed: 0, offsets: [30], recordedUntil: null });
    // Bytes below the first stored chunk were acknowledged.
    expect([l.committed, l.sent]).toEqual([30, 30]);
    // A stored `committed` beyond what is stored is capped.
    const capped = ChunkLedger.resumed({ recorded: 60, committed: 99, offsets: [0, 30], recordedUntil: null });
    expect(capped.committed).toBe(60);
    expect(capped.pending).toEqual([]);
  });

  it("judges the server's ready", () => {
    const l = new ChunkLedger();
    l.keep(l.receive(100), 100);
    l.acknowledge(40);
    expect(l.checkReady(40)).toBeNull();
    expect(l.checkReady(100)).toBeNull();
    expect(l.checkReady(101)).toBe("server-ahead");
    expect(l.checkReady(39)).toBe("server-lost-data");
    expect(l.ready(70)).toEqual([]);
    expect([l.committed, l.sent]).toEqual([70, 70]);
  });
});
