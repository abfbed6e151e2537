import { availableParallelism } from 'node:os';
import type { DuckDBInstance } from '@duckdb/node-api';
import { sqlString } from './duckdb-sql.js';
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
    // New database files in a format with zstd for strings (src/platform/duckdb/duckdb-storage.ts).
    storage_compatibility_version: STORAGE_VERSION,
    // No extension is fetched or loaded behind the server's back (json and parquet are built in).
    autoinstall_known_extensions: 'false',
    autoload_known_extensions: 'false',
  };
}

/**
 * Closes the instance to the host once the server's own setup is done: from then on no
 * connection opens a file outside `allowedPaths` (files) and `allowedDirectories` (folders,
 * with what is in them), reaches a URL or loads an extension, and no setting can change
 * again. The instance's temporary folder stays allowed (DuckDB adds it). A later ATTACH or
 * COPY of the server's own (a new log segment, a lake load) must go under an allowed folder.
 */
export async function lockDownDuckDB(
  instance: DuckDBInstance,
  allowed: { paths: readonly string[]; directories: readonly string[] },
): Promise<void> {
  const list = (xs: readonly string[]) => `[${xs.map(sqlString).join(', ')}]`;
  const c = await instance.connect();
  try {
    // In this order: the lists cannot change once external access is off.
    await c.run(`SET GLOBAL allowed_paths = ${list(allowed.paths)}`);
    await c.run(`SET GLOBAL allowed_directories = ${list(allowed.directories)}`);
    await c.run('SET GLOBAL enable_external_access = false');
    await c.run('SET GLOBAL lock_configuration = true');
  } finally {
    c.closeSync();
  }
}
