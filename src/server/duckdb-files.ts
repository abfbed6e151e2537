import { isAbsolute, join, relative } from 'node:path';
import type { TributaryConfig } from '../config/schema.js';
import { destinationPath } from '../destinations/runner.js';
import { TributaryError } from '../errors.js';

/**
 * What the embedded DuckDB instance may open once locked down: its database files and their
 * WALs, the folder new log segments go to, and each destination's DuckDB file or lake folder.
 * Not the data folder itself, which holds the PII salt (`pii-salt`).
 * @throws TributaryError `TRIB_ERR_CONFIG_INVALID` when a lake folder holds the data folder.
 */
export function duckDBFiles(
  dataDir: string,
  config: Pick<TributaryConfig, 'destinations'>,
): { paths: string[]; directories: string[] } {
  const at = (p: string) => destinationPath(dataDir, p);
  const files = [join(dataDir, 'warehouse.duckdb'), join(dataDir, 'log.duckdb')];
  const directories = [join(dataDir, 'log-segments')];
  for (const d of config.destinations) {
    if (d.type === 'duckdb' && d.path !== undefined) files.push(at(d.path));
    if (d.type !== 'parquet') continue;
    const inside = relative(at(d.path), dataDir);
    if (inside === '' || !(inside.startsWith('..') || isAbsolute(inside)))
      throw new TributaryError('TRIB_ERR_CONFIG_INVALID', [
        `  destinations.${d.id}.path: the lake folder ${at(d.path)} holds the data folder, where the PII salt is; give the lake a folder of its own (the default is under the data folder: path: lake)`,
      ]);
    directories.push(at(d.path));
  }
  return { paths: files.flatMap((f) => [f, `${f}.wal`]), directories };
}
