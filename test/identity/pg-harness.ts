import pg from 'pg';
import { IdentityConfig } from '../../src/config/identity-schema.js';
import { compileRules, type IdentityRules } from '../../src/identity/identifiers.js';
import { PostgresIdentityStore } from '../../src/identity/postgres/postgres-identity-store.js';
import { PostgresProfiles } from '../../src/identity/postgres/postgres-profiles.js';
import { SharedIdentityStage } from '../../src/identity/postgres/shared-identity-stage.js';
import type { StoredEvent } from '../../src/store/store.js';
import { scratchDatabase as scratchPgDatabase } from '../pg.js';
import type { ScenarioPipeline } from './golden-scenarios.js';
import { T0, type TestEvent } from './harness.js';

/** A database of its own in the machine's PostgreSQL, for pools of at most 4 connections; `drop` removes it. */
export async function scratchDatabase(): Promise<{ config: pg.PoolConfig; drop: () => Promise<void> }> {
  const db = await scratchPgDatabase('trib_pgid');
  return { config: { ...db.config, max: 4 }, drop: db.drop };
}

/** The warehouse's `events` table, as the DuckDB warehouse lays it out (its PostgreSQL twin is another component's). */
export async function createEventsTable(pool: pg.Pool, schema = 'tributary'): Promise<void> {
  await pool.query(`CREATE TABLE IF NOT EXISTS ${schema}.events (
    message_id text NOT NULL, source_id text NOT NULL, type text NOT NULL, event text, user_id text,
    anonymous_id text, "timestamp" timestamptz NOT NULL, received_at timestamptz NOT NULL,
    log_offset bigint NOT NULL, payload jsonb NOT NULL)`);
}

/** Stored events as collection would store them, from `from` on, one log offset each. */
export function toStored(events: readonly TestEvent[], from: number): StoredEvent[] {
  return events.map(({ at, source, ...e }, i) => {
    const ts = new Date(T0 + at * 60_000).toISOString();
    return {
      logOffset: from + i,
      sourceId: source ?? 'web',
      messageId: e.messageId,
      receivedAt: T0 + at * 60_000,
      json: JSON.stringify({ ...e, timestamp: ts, receivedAt: ts }),
    };
  });
}

export async function insertEvents(pool: pg.Pool, stored: readonly StoredEvent[], schema = 'tributary') {
  if (stored.length === 0) return;
  const rows = stored.map((s) => ({ s, e: JSON.parse(s.json) as Record<string, unknown> }));
  await pool.query(
    `INSERT INTO ${schema}.events
     SELECT m, src, t, ev, u, a, ts::timestamptz, to_timestamp(r / 1000), o, p::jsonb
     FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[], $8::float8[],
                 $9::bigint[], $10::text[]) AS x(m, src, t, ev, u, a, ts, r, o, p)`,
    [
      rows.map((r) => r.s.messageId),
      rows.map((r) => r.s.sourceId),
      rows.map((r) => String(r.e.type)),
      rows.map((r) => (typeof r.e.event === 'string' ? r.e.event : null)),
      rows.map((r) => (r.e.userId == null ? null : String(r.e.userId))),
      rows.map((r) => (r.e.anonymousId == null ? null : String(r.e.anonymousId))),
      rows.map((r) => String(r.e.timestamp)),
      rows.map((r) => r.s.receivedAt),
      rows.map((r) => r.s.logOffset),
      rows.map((r) => r.s.json),
    ],
  );
}

/**
 * The golden harness's shape on PostgreSQL (a `ScenarioPipeline`): `send` stores the events in
 * `events` and hands them to one `SharedIdentityStage` in feed-sized batches; `stage` is the
 * PostgreSQL Profile API. The schema stays: the scratch database it lives in is dropped whole.
 */
export async function pgIdentityPipeline(
  config: pg.PoolConfig,
  options: { identity?: unknown; consumer?: string; batch?: number; schema?: string } = {},
) {
  const pool = new pg.Pool(config);
  // An idle client dropped at teardown (the scratch database goes) must not fail the run.
  pool.on('error', () => undefined);
  const schema = options.schema ?? 'tributary';
  const rules: IdentityRules = compileRules(IdentityConfig.parse(options.identity ?? {}));
  const store = await PostgresIdentityStore.open({ pool, schema, computed: rules.computed });
  await createEventsTable(pool, schema);
  await store.ensureViews();
  const stage = await SharedIdentityStage.open({
    pool,
    rules,
    consumer: options.consumer ?? 'identity:p0',
    store,
  });
  const profiles = new PostgresProfiles(store, rules);
  const batch = options.batch ?? 3;
  let closed = false;
  const close = async () => {
    if (closed) return;
    closed = true;
    await stage.stop();
    await pool.end();
  };
  return {
    pool,
    rules,
    store,
    shared: stage,
    stage: profiles,
    async send(events: TestEvent[]): Promise<void> {
      const stored = toStored(events, stage.position());
      await insertEvents(pool, stored, schema);
      for (let i = 0; i < stored.length; i += batch) {
        const part = stored.slice(i, i + batch);
        await stage.handle(part, part[part.length - 1]!.logOffset + 1);
      }
    },
    async query(sql: string): Promise<Record<string, unknown>[]> {
      const c = await pool.connect();
      try {
        await c.query(`SET search_path TO ${schema}`);
        return (await c.query(sql)).rows;
      } finally {
        c.release();
      }
    },
    async eventProfiles(): Promise<Record<string, string | null>> {
      const r = await pool.query<{ m: string; p: string | null }>(
        `SELECT message_id AS m, profile_id AS p FROM ${schema}.events_with_profile ORDER BY log_offset`,
      );
      return Object.fromEntries(r.rows.map((row) => [row.m, row.p]));
    },
    close,
    /** Closes this pipeline and opens another on the same schema and consumer, as after a restart. */
    async reopen(): Promise<ScenarioPipeline> {
      await close();
      return pgIdentityPipeline(config, { ...options, schema });
    },
    destroy: close,
  };
}
