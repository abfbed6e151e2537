import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DuckDBInstance } from '@duckdb/node-api';
import { IdentityConfig } from '../../src/config/identity-schema.js';
import { DuckDBIdentityStore } from '../../src/identity/duckdb/duckdb-identity-store.js';
import { compileRules } from '../../src/identity/identifiers.js';
import { IdentityStage } from '../../src/identity/identity-stage.js';
import type { IdentityStore } from '../../src/identity/identity-store.js';
import { DuckDBEventLog } from '../../src/log/duckdb/duckdb-event-log.js';
import { EventFeed } from '../../src/pipeline/event-feed.js';
import { WarehouseLoader } from '../../src/pipeline/warehouse-loader.js';
import { DuckDBStore } from '../../src/store/duckdb/duckdb-store.js';
import type { ScenarioPipeline } from './golden-scenarios.js';

export const T0 = Date.parse('2026-11-01T10:00:00.000Z');

/** An event as collection stores it: messageId, timestamp and receivedAt set. */
export interface TestEvent {
  type: string;
  messageId: string;
  /** Minutes after T0. */
  at: number;
  source?: string;
  [key: string]: unknown;
}

/**
 * A real pipeline on a temporary folder: DuckDB event log → loader → `events` → feed →
 * identity stage on the DuckDB identity store. `wrap` lets a test put a fault in front of the store.
 * It is a `ScenarioPipeline`, so the golden scenarios run on it.
 */
export async function identityPipeline(
  options: {
    identity?: unknown;
    dir?: string;
    wrap?: (store: IdentityStore) => IdentityStore;
    now?: () => number;
  } = {},
) {
  const dir = options.dir ?? mkdtempSync(join(tmpdir(), 'trib-identity-'));
  const config = IdentityConfig.parse(options.identity ?? {});
  const instance = await DuckDBInstance.create(join(dir, 'warehouse.duckdb'));
  const c = await instance.connect();
  await c.run("SET GLOBAL TimeZone = 'UTC'");
  await c.run(`ATTACH IF NOT EXISTS '${join(dir, 'log.duckdb')}' AS log`);
  c.closeSync();
  const log = await DuckDBEventLog.open(instance, { catalog: 'log', segmentDir: join(dir, 'segments') });
  const warehouse = await DuckDBStore.open(instance);
  const loader = new WarehouseLoader(log, warehouse, { lingerMs: 0 });
  await loader.start();
  const feed = new EventFeed(warehouse, loader);
  const realStore = await DuckDBIdentityStore.open(instance, { computed: config.computed, now: options.now });
  const store = options.wrap ? options.wrap(realStore) : realStore;
  const errors: unknown[] = [];
  const stage = await IdentityStage.open(store, compileRules(config), {
    now: options.now,
    // Small feed calls, so a commit is often in flight while the next batch resolves.
    maxBatch: 3,
    onError: (e) => errors.push(e),
  });
  const feedStage = () => stage.follow(feed);
  feedStage();
  let closed = false;
  const close = async () => {
    if (closed) return;
    closed = true;
    await loader.drained();
    await loader.stop();
    await stage.stop();
    await realStore.close();
    await log.close();
    await warehouse.close();
    instance.closeSync();
  };
  return {
    dir,
    instance,
    stage,
    errors,
    warehouse,
    async send(events: TestEvent[]): Promise<void> {
      await log.append(
        events.map(({ at, source, ...e }) => {
          const ts = new Date(T0 + at * 60_000).toISOString();
          return {
            sourceId: source ?? 'web',
            messageId: e.messageId,
            receivedAt: T0 + at * 60_000,
            status: 'accepted' as const,
            json: JSON.stringify({ ...e, timestamp: ts, receivedAt: ts }),
          };
        }),
      );
      await loader.drained();
      await stage.drained();
    },
    async query(sql: string): Promise<Record<string, unknown>[]> {
      return (await warehouse.query(sql)).rows;
    },
    /** The profile id of each stored event, by messageId. */
    async eventProfiles(): Promise<Record<string, string | null>> {
      const rows = (
        await warehouse.query('SELECT message_id, profile_id FROM events_with_profile ORDER BY log_offset')
      ).rows;
      return Object.fromEntries(
        rows.map((r) => [String(r.message_id), (r.profile_id as string | null) ?? null]),
      );
    },
    close,
    /** Closes this pipeline and opens another on the same folder, as after a restart. */
    async reopen(): Promise<ScenarioPipeline> {
      await close();
      return identityPipeline({ ...options, dir });
    },
    async destroy() {
      await close();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

export type IdentityPipeline = Awaited<ReturnType<typeof identityPipeline>>;
