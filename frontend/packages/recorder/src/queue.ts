// Store operations of one track run one after another, in the order they were asked for
// (a chunk's append before the next one's, `committed` after the append it covers).

import type { ChunkStore } from "./store.js";

export class StoreQueue {
  private tail: Promise<void> = Promise.resolve();

  constructor(readonly store: ChunkStore | null) {}

  /** Run `op` after the ones before it; resolves whether it worked (false without a store). */
  run(op: (store: ChunkStore) => Promise<void>): Promise<boolean> {
    const store = this.store;
    const result = this.tail.then(async () => {
      if (!store) return false;
      try {
        await op(store);
        return true;
      } catch {
        return false;
      }
    });
    this.tail = result.then(() => undefined);
    return result;
  }

  /** Run a step of the caller's own after the queued operations (its errors are dropped). */
  then(step: () => Promise<void>): void {
    this.tail = this.tail.then(step).catch(() => undefined);
  }

  /** Resolves once everything queued so far has run. */
  get idle(): Promise<void> {
    return this.tail;
  }
}
