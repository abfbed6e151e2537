/**
 * The pause of a consumer loop between two reads: `sleep(ms)` waits at most `ms`, and `wake()`
 * ends the pause in progress at once (new records, a drain, a stop). A wake with no pause in
 * progress does nothing.
 */
export class Pause {
  private end: (() => void) | undefined;

  sleep(ms: number): Promise<void> {
    return new Promise<void>((resolve) => {
      const done = () => {
        clearTimeout(timer);
        if (this.end === done) this.end = undefined;
        resolve();
      };
      const timer = setTimeout(done, ms);
      this.end = done;
    });
  }

  wake(): void {
    this.end?.();
  }
}
