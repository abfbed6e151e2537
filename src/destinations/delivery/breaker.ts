/** What a breaker lets through: everything, one probe, or nothing. */
export type BreakerState = 'closed' | 'half-open' | 'open';

/**
 * A circuit breaker over the requests of one destination: `failures` retryable failures in a
 * row open it; while open nothing is sent; after `cooldownMs` one request probes the receiver
 * (half-open): a success closes it, a failure opens it again for another cooldown.
 *
 * @example
 * const b = new CircuitBreaker(5, 30_000);
 * if (b.allow()) { …send…; ok ? b.success() : b.failure(); }
 */
export class CircuitBreaker {
  private consecutive = 0;
  private openedAt: number | undefined;
  private probing = false;

  constructor(
    private readonly failures: number,
    private readonly cooldownMs: number,
    private readonly now: () => number = Date.now,
  ) {}

  get state(): BreakerState {
    if (this.openedAt === undefined) return 'closed';
    return this.probing || this.now() - this.openedAt >= this.cooldownMs ? 'half-open' : 'open';
  }

  /** Milliseconds until a probe may go, 0 when requests may go now. */
  waitMs(): number {
    if (this.openedAt === undefined) return 0;
    if (this.probing) return this.cooldownMs;
    return Math.max(0, this.openedAt + this.cooldownMs - this.now());
  }

  /** Whether a request may go now; in half-open state only the one probe may. */
  allow(): boolean {
    if (this.openedAt === undefined) return true;
    if (this.probing || this.now() - this.openedAt < this.cooldownMs) return false;
    this.probing = true;
    return true;
  }

  success(): void {
    this.consecutive = 0;
    this.openedAt = undefined;
    this.probing = false;
  }

  failure(): void {
    this.consecutive++;
    if (this.probing || this.consecutive >= this.failures) {
      this.openedAt = this.now();
      this.probing = false;
    }
  }
}

/**
 * Exponential backoff with full jitter: a random delay up to `initial · 2^(attempt−1)`, capped
 * at `max` (AWS's "full jitter", which spreads the retries of many clients the best).
 */
export function backoffMs(attempt: number, initial: number, max: number, random = Math.random): number {
  const ceiling = Math.min(max, initial * 2 ** Math.min(30, Math.max(0, attempt - 1)));
  return Math.round(random() * ceiling);
}

/** A token bucket of `perSecond` requests, with a burst of one second's worth. */
export class RateLimit {
  private tokens: number;
  private last: number;

  constructor(
    private readonly perSecond: number,
    private readonly now: () => number = Date.now,
  ) {
    this.tokens = Math.max(1, perSecond);
    this.last = now();
  }

  /** Takes a token, or answers the milliseconds until one is there. */
  take(): number {
    const t = this.now();
    this.tokens = Math.min(
      Math.max(1, this.perSecond),
      this.tokens + ((t - this.last) / 1000) * this.perSecond,
    );
    this.last = t;
    if (this.tokens >= 1) {
      this.tokens -= 1;
      return 0;
    }
    return Math.ceil(((1 - this.tokens) / this.perSecond) * 1000);
  }
}
