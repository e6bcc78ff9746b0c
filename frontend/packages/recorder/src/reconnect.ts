// When to try the connection again: the policy's jittered exponential delay on a timer,
// reset by a connection that worked, cut short when the browser comes back online.

import { reconnectDelay, type BackoffOptions } from "./policy.js";

export class Reconnector {
  /** Failed tries since the last connection that worked (picks the delay). */
  attempt = 0;
  /** Reconnects so far. */
  count = 0;
  /** Epoch ms of the scheduled try, or null. */
  nextAt: number | null = null;
  private timer: ReturnType<typeof setTimeout> | null = null;

  constructor(
    private readonly opts: BackoffOptions,
    private readonly connect: () => void,
    private readonly random: () => number = Math.random,
  ) {}

  /** Try again after the next delay; returns the delay (ms). */
  schedule(): number {
    this.cancel();
    const delay = reconnectDelay(this.attempt, this.opts, this.random);
    this.attempt += 1;
    this.count += 1;
    this.nextAt = Date.now() + delay;
    this.timer = setTimeout(() => this.fire(), delay);
    return delay;
  }

  /** A connection worked: the next failure starts from the first delay again. */
  succeeded(): void {
    this.attempt = 0;
  }

  /** The network is back (the browser's `online`): try now if a try is waiting. */
  now(): void {
    if (this.timer !== null) this.fire();
  }

  cancel(): void {
    if (this.timer !== null) clearTimeout(this.timer);
    this.timer = null;
    this.nextAt = null;
  }

  private fire(): void {
    this.cancel();
    this.connect();
  }
}
