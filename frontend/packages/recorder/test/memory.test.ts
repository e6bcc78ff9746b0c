import { describe, expect, it } from "vitest";
import { MemoryBudget } from "../src/memory.js";
import { chunk } from "./fakes.js";

describe("MemoryBudget", () => {
  it("spills the oldest stored chunks over budget, never memory-only ones", () => {
    const m = new MemoryBudget(250);
    m.put(0, chunk(100, 0), true); // storage failed for this one
    m.put(100, chunk(100, 1), false);
    m.put(200, chunk(100, 2), false);
    expect(m.bytes).toBe(300);
    expect(m.spill()).toBe(1);
    expect(m.bytes).toBe(200);
    expect(m.get(0)).toBeDefined(); // pinned: all there is
    expect(m.get(100)).toBeUndefined(); // storage has it
    expect(m.get(200)).toBeDefined();
    expect(m.pinnedChunks().map(([o]) => o)).toEqual([0]);
  });

  it("holds one chunk read back from storage until it is acknowledged", () => {
    const m = new MemoryBudget(0);
    m.setReadahead(100, chunk(50, 1));
    expect(m.get(100)?.size).toBe(50);
    expect(m.bytes).toBe(50);
    m.releaseReadaheadBelow(149);
    expect(m.get(100)).toBeDefined();
    m.releaseReadaheadBelow(150);
    expect(m.get(100)).toBeUndefined();
    expect(m.bytes).toBe(0);
  });

  it("drops what storage holds once nothing more is sent", () => {
    const m = new MemoryBudget(1000);
    m.put(0, chunk(10, 0), false);
    m.put(10, chunk(10, 1), true);
    m.dropStored();
    expect(m.bytes).toBe(10);
    m.release(10);
    expect(m.bytes).toBe(0);
    expect(m.pinnedChunks()).toEqual([]);
  });
});
