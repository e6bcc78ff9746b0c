// The memory budget: in-memory copies of kept chunks, by start offset. Chunks that
// IndexedDB holds may be dropped (spilled) once the budget is exceeded, oldest first, and
// are read back from storage when a resend needs them; "pinned" chunks exist in memory
// only (storage failed) and are never dropped before the server acknowledged them.

export class MemoryBudget {
  private readonly chunks = new Map<number, Blob>(); // insertion order = offset order
  private readonly pinned = new Set<number>();
  private readahead: { offset: number; blob: Blob } | null = null;
  private held = 0;

  constructor(readonly budgetBytes: number) {}

  /** Bytes held in memory (kept chunks plus the last chunk read back from storage). */
  get bytes(): number {
    return this.held + (this.readahead?.blob.size ?? 0);
  }

  /** Keep a chunk in memory; `pinned`: storage does not have it. */
  put(offset: number, blob: Blob, pinned: boolean): void {
    this.chunks.set(offset, blob);
    this.held += blob.size;
    if (pinned) this.pinned.add(offset);
  }

  /** The chunk starting at `offset`, from memory or the last read-back, if held. */
  get(offset: number): Blob | undefined {
    return this.chunks.get(offset) ?? (this.readahead?.offset === offset ? this.readahead.blob : undefined);
  }

  /** A chunk read back from storage for a resend (only the latest one is held). */
  setReadahead(offset: number, blob: Blob): void {
    this.readahead = { offset, blob };
  }

  /** The server acknowledged the chunk at `offset`: memory need not hold it. */
  release(offset: number): void {
    const blob = this.chunks.get(offset);
    if (blob) {
      this.chunks.delete(offset);
      this.held -= blob.size;
    }
    this.pinned.delete(offset);
  }

  /** Drop the read-back chunk once everything below `committed` is acknowledged. */
  releaseReadaheadBelow(committed: number): void {
    if (this.readahead && this.readahead.offset + this.readahead.blob.size <= committed) this.readahead = null;
  }

  /** Hold at most the budget, dropping the oldest stored chunks; returns how many went. */
  spill(): number {
    let dropped = 0;
    if (this.held <= this.budgetBytes) return dropped;
    for (const [offset, blob] of this.chunks) {
      if (this.held <= this.budgetBytes) break;
      if (this.pinned.has(offset)) continue;
      this.chunks.delete(offset);
      this.held -= blob.size;
      dropped += 1;
    }
    return dropped;
  }

  /** Drop every chunk storage has (nothing more will be sent); memory-only ones stay. */
  dropStored(): void {
    for (const [offset, blob] of this.chunks) {
      if (this.pinned.has(offset)) continue;
      this.chunks.delete(offset);
      this.held -= blob.size;
    }
    this.readahead = null;
  }

  /** The memory-only chunks, by offset ascending. */
  pinnedChunks(): Array<[number, Blob]> {
    return [...this.pinned]
      .sort((a, b) => a - b)
      .flatMap((o) => {
        const blob = this.chunks.get(o);
        return blob ? [[o, blob] as [number, Blob]] : [];
      });
  }

  clear(): void {
    this.chunks.clear();
    this.pinned.clear();
    this.held = 0;
    this.readahead = null;
  }
}
