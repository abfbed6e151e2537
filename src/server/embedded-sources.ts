import { mkdirSync } from 'node:fs';
import { resolve } from 'node:path';
import type { TributaryConfig } from '../config/schema.js';
import type { SourceService } from '../sources/source-service.js';
import { DuckDBSourceStore } from '../store/duckdb/duckdb-source-store.js';
import { DuckDBStore } from '../store/duckdb/duckdb-store.js';
import { pullSources } from './pull-sources.js';
import { openWorkspaceFiles } from './workspace-files.js';

/**
 * The sources of an embedded workspace without its server (`tributary import` when no server
 * runs): the same files the server opens (DuckDB allows one process per file), the event log
 * the rows' events are appended to, and the store their objects and state go to. The server
 * loads the events at its next start.
 */
export async function openEmbeddedSources(
  config: TributaryConfig,
  dataDir: string,
  baseDir: string,
): Promise<{ sources: SourceService; close(): Promise<void> }> {
  const dir = resolve(dataDir);
  mkdirSync(dir, { recursive: true });
  const { instance, log } = await openWorkspaceFiles(dir, config.storage);
  // Creates failed_events where the workspace is new.
  const warehouse = await DuckDBStore.open(instance);
  const store = await DuckDBSourceStore.open(instance, { checkpoints: warehouse.checkpoints });
  await store.abandonRuns();
  const sources = pullSources(config.sources, { store, log, baseDir });
  return {
    sources,
    async close() {
      await sources.stop();
      await store.close();
      await warehouse.close();
      await log.close();
      instance.closeSync();
    },
  };
}
