/**
 * Failed log-ins per user name: after `maxFailures` within `windowMs`, the name is locked for
 * `lockoutMs` (whether the user exists or not, so a lock says nothing about which names do).
 * Kept in the process's memory: in scale-out each ingest process counts its own.
 */
export class LoginThrottle {
  private readonly entries = new Map<string, { failures: number; first: number; lockedUntil: number }>();

  constructor(
    private readonly options: { maxFailures: number; windowMs: number; lockoutMs: number; maxNames?: number },
  ) {}

  /** Milliseconds the name stays locked at `now`, or 0. */
  lockedFor(name: string, now: number): number {
    const e = this.entries.get(name);
    return e && e.lockedUntil > now ? e.lockedUntil - now : 0;
  }

  failed(name: string, now: number): void {
    let e = this.entries.get(name);
    if (!e || now - e.first > this.options.windowMs) {
      e = { failures: 0, first: now, lockedUntil: 0 };
      this.entries.delete(name);
      this.entries.set(name, e);
      this.evict(now);
    }
    e.failures++;
    if (e.failures >= this.options.maxFailures) {
      e.lockedUntil = now + this.options.lockoutMs;
      e.failures = 0;
      e.first = now;
    }
  }

  succeeded(name: string): void {
    this.entries.delete(name);
  }

  /** Bounded memory: a flood of made-up names drops the oldest entries that are not locked. */
  private evict(now: number): void {
    const max = this.options.maxNames ?? 10_000;
    if (this.entries.size <= max) return;
    for (const [name, e] of this.entries) {
      if (this.entries.size <= max) break;
      if (e.lockedUntil <= now) this.entries.delete(name);
    }
  }
}
