import { availableParallelism } from 'node:os';
import { STORAGE_VERSION } from './duckdb-storage.js';

/**
 * Options of the embedded DuckDB instance: the server's, and the benchmarks' that measure its
 * stages under the same settings.
 */
export function embeddedDuckDBOptions(storage: {
  memoryLimit: string;
  threads?: number | undefined;
}): Record<string, string> {
  return {
    // DuckDB checkpoints when a WAL passes checkpoint_threshold, inside the commit that crossed
    // it, or skips it while other writes are active. The log and the warehouse checkpoint
    // themselves between their own writes instead; the threshold is only a backstop.
    checkpoint_threshold: '1GB',
    memory_limit: storage.memoryLimit,
    // The event loop keeps a core (docs/configuration.md, `storage.threads`).
    threads: String(storage.threads ?? Math.max(1, availableParallelism() - 1)),
    // New database files in a format with zstd for strings (src/duckdb-storage.ts).
    storage_compatibility_version: STORAGE_VERSION,
  };
}
