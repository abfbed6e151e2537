import type { DuckDBConnection } from '@duckdb/node-api';

/**
 * The storage format the embedded instance writes new database files in (DuckDB's
 * `storage_compatibility_version`). From v1.2.0 on, DuckDB can compress strings with zstd,
 * which the large JSON columns are forced to use (`largeTextCompression`). Files it makes are
 * readable by DuckDB 1.2 and later; files made before keep their own format.
 */
export const STORAGE_VERSION = 'v1.2.0';

/** A database's storage format as DuckDB tags it (`v1.0.0+`, `v1.2.0+`), or undefined. */
export async function storageVersion(conn: DuckDBConnection, catalog: string): Promise<string | undefined> {
  const r = await conn.runAndReadAll(
    `SELECT tags['storage_version'] FROM duckdb_databases() WHERE database_name = $1`,
    [catalog],
  );
  const v = r.getRows()[0]?.[0];
  return v === null || v === undefined ? undefined : String(v);
}

/** True when a database of storage format `version` can store strings compressed with zstd. */
export function zstdStorable(version: string | undefined): boolean {
  const m = /^v(\d+)\.(\d+)\.(\d+)/.exec(version ?? '');
  if (!m) return false;
  const [major, minor] = [Number(m[1]), Number(m[2])];
  return major > 1 || (major === 1 && minor >= 2);
}

/**
 * The compression clause for a column of large JSON text (the log's events, the warehouse's
 * payloads) in `catalog`. zstd where the file's format has it: in a test of 200,000 generated
 * events (docs/architecture.md) it took 3.1 µs of CPU per event at checkpoints against 7.7
 * with DuckDB's own choice, and made the file a seventh of the size. An older file is given
 * `fallback` (`USING COMPRESSION fsst`, or nothing for DuckDB's choice): DuckDB would store
 * a zstd column of such a file uncompressed.
 */
export async function largeTextCompression(
  conn: DuckDBConnection,
  catalog: string,
  fallback: string,
): Promise<string> {
  return zstdStorable(await storageVersion(conn, catalog)) ? 'USING COMPRESSION zstd' : fallback;
}
