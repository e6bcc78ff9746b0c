import { describe, expect, it } from "vitest";
import { decideClose, reconnectDelay, type CloseContext } from "../src/policy.js";

const ctx = (over: Partial<CloseContext> = {}): CloseContext => ({
  errorCode: null,
  errorMessage: null,
  mayBeFinished: false,
  canConfirm: true,
  ...over,
});

describe("decideClose: every close code of docs/protocol.md", () => {
  it.each([
    [4400, "bad-message", "rejected a message"],
    [4401, "bad-token", "refused the upload token"],
    [4404, "unknown-session", "does not know this recording"],
    [4409, "finished", "already closed this recording"],
    [4413, "session-too-large", "larger than the server accepts"],
  ])("%i (%s) is a refusal for good", (code, errorCode, words) => {
    const d = decideClose(code, "", ctx({ errorCode, errorMessage: "server says so" }));
    expect(d.action).toBe("stop");
    if (d.action !== "stop") return;
    expect(d.kind).toBe("refused");
    expect(d.message).toContain(words);
    expect(d.message).toContain("(server says so)");
  });

  it("4409 superseded (another tab took over) stops without calling it a refusal", () => {
    const d = decideClose(4409, "", ctx({ errorCode: "superseded" }));
    expect(d).toMatchObject({ action: "stop", kind: "error" });
    if (d.action === "stop") expect(d.message).toContain("Another tab");
  });

  it("4409 after finish asks whether the track is finished, when it can", () => {
    const d = decideClose(4409, "", ctx({ errorCode: "finished", mayBeFinished: true }));
    expect(d).toMatchObject({ action: "confirm", ifNot: { action: "stop", kind: "refused" } });
    expect(decideClose(4409, "", ctx({ mayBeFinished: true, canConfirm: false })).action).toBe("stop");
    expect(decideClose(4409, "", ctx({ mayBeFinished: false })).action).toBe("stop");
    // Other refusals are never "maybe finished".
    expect(decideClose(4401, "", ctx({ mayBeFinished: true })).action).toBe("stop");
  });

  it.each([
    [1000, "code 1000"],
    [1001, "went away"],
    [1006, "dropped"],
    [1011, "hit an error"],
    [1012, "restarting"],
    [1013, "busy"],
    [4000, "code 4000, stalled"],
    [4408, "idle"],
    [4503, "storage is unavailable"],
  ])("%i is retried", (code, words) => {
    const d = decideClose(code, code === 4000 ? "stalled" : "", ctx());
    expect(d.action).toBe("retry");
    if (d.action === "retry") expect(d.message).toContain(words);
  });
});

describe("reconnectDelay", () => {
  const opts = { initialBackoffMs: 250, maxBackoffMs: 5000 };

  it("doubles per attempt up to the maximum", () => {
    const top = (attempt: number) => reconnectDelay(attempt, opts, () => 1);
    expect([0, 1, 2, 3, 4, 5, 6].map(top)).toEqual([250, 500, 1000, 2000, 4000, 5000, 5000]);
  });

  it("jitters between half and all of the delay", () => {
    expect(reconnectDelay(2, opts, () => 0)).toBe(500);
    expect(reconnectDelay(2, opts, () => 0.5)).toBe(750);
    const seen = new Set<number>();
    for (let i = 0; i < 200; i++) {
      const d = reconnectDelay(3, opts);
      expect(d).toBeGreaterThanOrEqual(1000);
      expect(d).toBeLessThanOrEqual(2000);
      seen.add(Math.round(d));
    }
    expect(seen.size).toBeGreaterThan(50); // spread, not one value
  });
});
