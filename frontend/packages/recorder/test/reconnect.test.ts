import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { Reconnector } from "../src/reconnect.js";

describe("Reconnector", () => {
  beforeEach(() => {
    vi.useFakeTimers({ toFake: ["setTimeout", "clearTimeout", "Date"] });
  });
  afterEach(() => {
    vi.useRealTimers();
  });

  it("waits the jittered exponential delay, and starts over after a connection worked", () => {
    let tries = 0;
    const draws = [0, 1, 0.5, 0];
    const r = new Reconnector({ initialBackoffMs: 100, maxBackoffMs: 300 }, () => tries++, () => draws.shift() ?? 0);
    expect(r.schedule()).toBe(50); // base 100, drawn low: half of it
    expect(r.nextAt).toBe(Date.now() + 50);
    vi.advanceTimersByTime(49);
    expect(tries).toBe(0);
    vi.advanceTimersByTime(1);
    expect([tries, r.nextAt]).toEqual([1, null]);
    expect(r.schedule()).toBe(200); // base 200, drawn high: all of it
    vi.advanceTimersByTime(200);
    expect(r.schedule()).toBe(225); // base 400 capped at 300, drawn in the middle
    vi.advanceTimersByTime(225);
    expect([tries, r.count, r.attempt]).toEqual([3, 3, 3]);
    r.succeeded();
    expect(r.schedule()).toBe(50);
    expect(r.count).toBe(4);
    r.cancel();
    vi.advanceTimersByTime(1000);
    expect(tries).toBe(3);
  });

  it("tries at once when the browser comes back online, only if a try is waiting", () => {
    let tries = 0;
    const r = new Reconnector({ initialBackoffMs: 1000, maxBackoffMs: 5000 }, () => tries++);
    r.now();
    expect(tries).toBe(0);
    r.schedule();
    r.now();
    expect([tries, r.nextAt]).toEqual([1, null]);
    vi.advanceTimersByTime(10_000);
    expect(tries).toBe(1); // the waiting timer went with it
  });
});
