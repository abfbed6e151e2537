import type { DuckDBConnection } from '@duckdb/node-api';

/**
 * Runs `CHECKPOINT` on each attached database at a fixed interval from its own connection,
 * so WAL files stay small without a checkpoint stalling a commit (DuckDB lets appends go on
 * during a checkpoint started this way). One checkpoint at a time; a slow one delays the next.
 */
export class BackgroundCheckpointer {
  private timer: NodeJS.Timeout | undefined;
  private running: Promise<void> | undefined;
  private stopped = false;

  constructor(
    private readonly conn: DuckDBConnection,
    private readonly catalogs: readonly string[],
    private readonly onError: (err: unknown) => void,
    intervalMs = 2000,
  ) {
    this.timer = setInterval(() => {
      this.running ??= this.checkpoint().finally(() => {
        this.running = undefined;
      });
    }, intervalMs);
    this.timer.unref();
  }

  private async checkpoint(): Promise<void> {
    for (const catalog of this.catalogs) {
      if (this.stopped) return;
      try {
        await this.conn.run(`CHECKPOINT "${catalog.replace(/"/g, '""')}"`);
      } catch (err) {
        this.onError(err);
      }
    }
  }

  async stop(): Promise<void> {
    this.stopped = true;
    clearInterval(this.timer);
    await this.running;
    this.conn.closeSync();
  }
}
