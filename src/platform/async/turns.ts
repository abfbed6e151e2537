/**
 * Jobs that take turns: each starts once the one before has settled, whether it resolved or
 * failed, and its own result or error goes to its caller alone.
 */
export class Turns {
  private last: Promise<unknown> = Promise.resolve();

  run<T>(job: () => Promise<T>): Promise<T> {
    const next = this.last.then(job, job);
    this.last = next.catch(() => undefined);
    return next;
  }

  /** Resolves once every job started so far has settled. */
  async idle(): Promise<void> {
    await this.last;
  }
}
