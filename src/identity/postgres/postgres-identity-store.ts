import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import type pg from 'pg';
import { from as copyFrom } from 'pg-copy-streams';
import type { ComputedTrait } from '../../config/identity-schema.js';
import { TributaryError } from '../../errors.js';
import type { ErasureTarget } from '../../governance/privacy/erasure.js';
import type { StoredEvent } from '../../store/store.js';
import { identifierKey } from '../identifiers.js';
import {
  type Block,
  type Decision,
  Dirty,
  type IdentityChanges,
  type MergeRecord,
  type Profile,
} from '../identity-engine.js';
import type { IdentitySnapshot, IdentityStore, ProfileEvent } from '../identity-store.js';
import { type ProfileRows, snapshotProfiles } from '../profile-rows.js';
import { computedFromJson } from '../traits.js';

/** Advisory lock classes (first key of the two-key form), so our locks never meet another component's. */
const LOCK_DDL = 0x54524930; // 'TRI0'
const LOCK_GRAPH = 0x54524931; // 'TRI1'

/** A client or the pool: what a read or a step of a transaction needs. */
export type Queryable = Pick<pg.ClientBase, 'query'>;

/** A double-quoted identifier. */
function ident(name: string): string {
  return `"${name.replace(/"/g, '""')}"`;
}

/** Epoch milliseconds of a timestamptz column, as a float8 the driver returns as a number. */
const ms = (col: string) => `round(extract(epoch FROM ${col}) * 1000)::float8`;

function schemaSql(s: string): string[] {
  return [
    `CREATE SCHEMA IF NOT EXISTS ${s}`,
    `CREATE TABLE IF NOT EXISTS ${s}.profiles (
      profile_id text PRIMARY KEY,
      first_seen timestamptz NOT NULL,
      last_seen timestamptz NOT NULL,
      event_count bigint NOT NULL,
      created_offset bigint NOT NULL,
      updated_at timestamptz NOT NULL)`,
    // (type, value) is the key every batch looks its identifiers up by; unique, so two
    // profiles can never hold one identifier even if the locking were ever wrong.
    `CREATE TABLE IF NOT EXISTS ${s}.profile_identifiers (
      profile_id text NOT NULL,
      type text NOT NULL,
      value text NOT NULL,
      first_seen timestamptz NOT NULL,
      source_id text NOT NULL,
      log_offset bigint NOT NULL,
      PRIMARY KEY (type, value))`,
    `CREATE INDEX IF NOT EXISTS profile_identifiers_profile ON ${s}.profile_identifiers (profile_id)`,
    // json (not jsonb) keeps the text as written, so values read back exactly as the engine held them.
    `CREATE TABLE IF NOT EXISTS ${s}.profile_traits (
      profile_id text NOT NULL,
      trait text NOT NULL,
      value json,
      "timestamp" timestamptz NOT NULL,
      source_id text NOT NULL,
      log_offset bigint NOT NULL,
      PRIMARY KEY (profile_id, trait))`,
    // For trait search; the prefix keeps long values under the btree's row size limit.
    `CREATE INDEX IF NOT EXISTS profile_traits_search ON ${s}.profile_traits (trait, left(value #>> '{}', 200))`,
    `CREATE TABLE IF NOT EXISTS ${s}.profile_computed_traits (
      profile_id text NOT NULL,
      name text NOT NULL,
      value json,
      state json NOT NULL,
      updated_at timestamptz NOT NULL,
      PRIMARY KEY (profile_id, name))`,
    `CREATE TABLE IF NOT EXISTS ${s}.profile_merges (
      merge_id text PRIMARY KEY,
      profile_id text NOT NULL,
      merged_profile_id text NOT NULL,
      log_offset bigint NOT NULL,
      message_id text NOT NULL,
      "timestamp" timestamptz NOT NULL,
      survivor_identifiers json NOT NULL,
      merged_identifiers json NOT NULL,
      unmerged_at timestamptz,
      block_id text)`,
    `CREATE INDEX IF NOT EXISTS profile_merges_profile ON ${s}.profile_merges (profile_id)`,
    `CREATE INDEX IF NOT EXISTS profile_merges_merged ON ${s}.profile_merges (merged_profile_id)`,
    // jsonb with GIN: a batch finds the blocks naming any of its identifiers with `?|`.
    `CREATE TABLE IF NOT EXISTS ${s}.profile_blocks (
      block_id text PRIMARY KEY,
      merge_id text NOT NULL,
      side_a jsonb NOT NULL,
      side_b jsonb NOT NULL,
      created_at timestamptz NOT NULL)`,
    `CREATE INDEX IF NOT EXISTS profile_blocks_side_a ON ${s}.profile_blocks USING gin (side_a)`,
    `CREATE INDEX IF NOT EXISTS profile_blocks_side_b ON ${s}.profile_blocks USING gin (side_b)`,
    // As in DuckDB: the profile each event was resolved into, followed through the aliases
    // merges leave, so a merge rewrites one alias row per absorbed profile.
    `CREATE TABLE IF NOT EXISTS ${s}.profile_event_assignments (
      log_offset bigint NOT NULL,
      message_id text NOT NULL,
      profile_id text NOT NULL,
      PRIMARY KEY (log_offset, message_id))`,
    `CREATE INDEX IF NOT EXISTS profile_event_assignments_profile ON ${s}.profile_event_assignments (profile_id)`,
    `CREATE TABLE IF NOT EXISTS ${s}.profile_aliases (
      profile_id text PRIMARY KEY,
      current_profile_id text NOT NULL)`,
    `CREATE INDEX IF NOT EXISTS profile_aliases_current ON ${s}.profile_aliases (current_profile_id)`,
    `CREATE OR REPLACE VIEW ${s}.profile_events AS
      SELECT a.log_offset, a.message_id, coalesce(al.current_profile_id, a.profile_id) AS profile_id
      FROM ${s}.profile_event_assignments a LEFT JOIN ${s}.profile_aliases al ON al.profile_id = a.profile_id`,
    // Unlike DuckDB's, it keeps the event's source and timestamp: explain reads decisions
    // without a join to `events`, which lives in another component's tables.
    `CREATE TABLE IF NOT EXISTS ${s}.identity_decisions (
      log_offset bigint NOT NULL,
      message_id text NOT NULL,
      action text NOT NULL,
      limited boolean NOT NULL,
      profile_id text,
      identifiers jsonb NOT NULL,
      left_out json NOT NULL,
      involved json NOT NULL,
      rule text NOT NULL,
      source_id text NOT NULL,
      "timestamp" timestamptz NOT NULL,
      PRIMARY KEY (log_offset, message_id))`,
    `CREATE INDEX IF NOT EXISTS identity_decisions_identifiers ON ${s}.identity_decisions USING gin (identifiers)`,
    // One row per consumer (one per partition, e.g. `identity:p3`), moved by compare-and-set.
    `CREATE TABLE IF NOT EXISTS ${s}.identity_offsets (
      consumer text PRIMARY KEY,
      next_offset bigint NOT NULL,
      updated_at timestamptz NOT NULL)`,
  ];
}

/** Every table, index and view `schemaSql` makes: when all exist, `open` runs no DDL. */
const RELATIONS = [
  'profiles',
  'profile_identifiers',
  'profile_identifiers_profile',
  'profile_traits',
  'profile_traits_search',
  'profile_computed_traits',
  'profile_merges',
  'profile_merges_profile',
  'profile_merges_merged',
  'profile_blocks',
  'profile_blocks_side_a',
  'profile_blocks_side_b',
  'profile_event_assignments',
  'profile_event_assignments_profile',
  'profile_aliases',
  'profile_aliases_current',
  'profile_events',
  'identity_decisions',
  'identity_decisions_identifiers',
  'identity_offsets',
];

/** A change set with its profiles' rows, read when prepared. */
export interface PreparedChanges {
  changes: IdentityChanges;
  rows: ProfileRows[];
}

const DECISION_COLUMNS = [
  'log_offset',
  'message_id',
  'action',
  'limited',
  'profile_id',
  'identifiers',
  'left_out',
  'involved',
  'rule',
  'source_id',
  '"timestamp"',
];

const PROFILE_TABLES: [string, number][] = [
  ['profiles', Dirty.row],
  ['profile_identifiers', Dirty.identifiers],
  ['profile_traits', Dirty.traits],
  ['profile_computed_traits', Dirty.computed],
];

export interface PostgresIdentityStoreOptions {
  /** The process's pool; the store never ends it. */
  pool: pg.Pool;
  /** Schema of the identity tables. Default `tributary`. */
  schema?: string;
  /** Consumer name of the `IdentityStore` port's offset (`offset()`, `prepareCommit()`). Default `identity`. */
  consumer?: string;
  /** Computed trait definitions, to store each one's current value. */
  computed?: readonly ComputedTrait[];
  now?: () => number;
  /**
   * A transaction idle this long (its process frozen or cut off while holding the graph
   * lock) is ended by PostgreSQL, so the other workers go on. Default 60,000 ms.
   */
  idleInTransactionMs?: number;
}

/** A merge to undo with everything its unmerge needs, loaded under the graph lock. */
export interface UnmergeSet {
  merge: MergeRecord;
  /** The live profile the merge's survivor is part of now. */
  currentId: string;
  snapshot: IdentitySnapshot;
  events: StoredEvent[];
}

/**
 * The identity store on PostgreSQL, for the scale-out deployment: the same tables and views
 * as the DuckDB store, in a schema of their own, indexed for partial loading (the profiles
 * holding a batch's identifiers, and what those touch) instead of loading the whole graph.
 *
 * Concurrency: every writer of the graph takes one transaction-scoped advisory lock on the
 * schema's identity graph first (`lockGraph`), then reads and writes. See `SharedIdentityStage`
 * for why one lock rather than per-identifier locks.
 *
 * It also implements the `IdentityStore` port (whole-graph `load`, `commit` under the graph
 * lock), so the embedded `IdentityStage` can run on it as well.
 */
export class PostgresIdentityStore implements IdentityStore {
  readonly schema: string;
  /** Quoted schema name for SQL. */
  private readonly s: string;
  readonly pool: pg.Pool;
  private readonly consumer: string;
  private readonly computed: readonly ComputedTrait[];
  private readonly now: () => number;
  private readonly begin: string;

  async erasureOf(profileIds: readonly string[]): Promise<{ profileIds: string[]; messageIds: string[] }> {
    const ids = new Set(profileIds);
    for (let grew = true; grew; ) {
      grew = false;
      const r = await this.pool.query<{ a: string; b: string }>(
        `SELECT profile_id AS a, current_profile_id AS b FROM ${this.s}.profile_aliases
           WHERE profile_id = ANY($1) OR current_profile_id = ANY($1)
         UNION ALL SELECT profile_id, merged_profile_id FROM ${this.s}.profile_merges
           WHERE profile_id = ANY($1) OR merged_profile_id = ANY($1)`,
        [[...ids]],
      );
      for (const row of r.rows)
        for (const v of [row.a, row.b])
          if (!ids.has(v)) {
            ids.add(v);
            grew = true;
          }
    }
    const m = await this.pool.query<{ message_id: string }>(
      `SELECT DISTINCT message_id FROM ${this.s}.profile_event_assignments WHERE profile_id = ANY($1)`,
      [[...ids]],
    );
    return { profileIds: [...ids], messageIds: m.rows.map((r) => r.message_id) };
  }

  /** Deletes the person's rows (see `IdentityStore.erase`) in one transaction, then `VACUUM FULL`s the tables. */
  async erase(target: ErasureTarget): Promise<void> {
    const s = this.s;
    const P = target.profileIds;
    const M = target.messageIds;
    const V = target.values;
    const PV = [...V, ...P];
    const text = (expr: string, n: number) =>
      `EXISTS (SELECT 1 FROM unnest($${n}::text[]) v WHERE strpos(${expr}, v) > 0)`;
    const statements: [string, unknown[]][] = [
      [`DELETE FROM ${s}.profiles WHERE profile_id = ANY($1)`, [P]],
      [`DELETE FROM ${s}.profile_identifiers WHERE profile_id = ANY($1) OR ${text('value', 2)}`, [P, V]],
      [`DELETE FROM ${s}.profile_traits WHERE profile_id = ANY($1)`, [P]],
      [`DELETE FROM ${s}.profile_computed_traits WHERE profile_id = ANY($1)`, [P]],
      [`DELETE FROM ${s}.profile_merges WHERE profile_id = ANY($1) OR merged_profile_id = ANY($1)`, [P]],
      [`DELETE FROM ${s}.profile_blocks WHERE ${text("side_a::text || ' ' || side_b::text", 1)}`, [PV]],
      [
        `DELETE FROM ${s}.profile_event_assignments WHERE profile_id = ANY($1) OR message_id = ANY($2)`,
        [P, M],
      ],
      [`DELETE FROM ${s}.profile_aliases WHERE profile_id = ANY($1) OR current_profile_id = ANY($1)`, [P]],
      [
        `DELETE FROM ${s}.identity_decisions WHERE profile_id = ANY($1) OR message_id = ANY($2) OR ${text('identifiers::text || left_out::text || involved::text', 3)}`,
        [P, M, PV],
      ],
    ];
    const c = await this.pool.connect();
    try {
      await c.query('BEGIN');
      for (const [sql, params] of statements) await c.query(sql, params);
      await c.query('COMMIT');
    } catch (err) {
      await c.query('ROLLBACK').catch(() => undefined);
      throw err;
    } finally {
      c.release();
    }
    for (const t of [
      'profiles',
      'profile_identifiers',
      'profile_traits',
      'profile_computed_traits',
      'profile_merges',
      'profile_blocks',
      'profile_event_assignments',
      'profile_aliases',
      'identity_decisions',
    ])
      await this.pool.query(`VACUUM FULL ${s}.${t}`);
  }

  private constructor(options: PostgresIdentityStoreOptions) {
    this.pool = options.pool;
    this.schema = options.schema ?? 'tributary';
    this.s = ident(this.schema);
    this.consumer = options.consumer ?? 'identity';
    this.computed = options.computed ?? [];
    this.now = options.now ?? Date.now;
    this.begin = `BEGIN; SET LOCAL idle_in_transaction_session_timeout = ${Math.max(0, Math.trunc(options.idleInTransactionMs ?? 60_000))}`;
  }

  /**
   * Creates the schema, tables and indexes if missing. The DDL runs in one transaction under
   * an advisory lock, so processes starting together do not race on `CREATE … IF NOT EXISTS`
   * (which is not safe against concurrent creation of the same name).
   */
  static async open(options: PostgresIdentityStoreOptions): Promise<PostgresIdentityStore> {
    const store = new PostgresIdentityStore(options);
    // Set up already (every start but the first): no DDL, so no table locks next to running
    // batches (`CREATE INDEX IF NOT EXISTS` locks its table before it finds the index).
    const r = await store.pool.query<{ n: number }>(
      `SELECT count(*)::int AS n FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
       WHERE n.nspname = $1 AND c.relname = ANY($2::text[])`,
      [store.schema, RELATIONS],
    );
    if (r.rows[0]!.n === RELATIONS.length) return store;
    await store.transaction(async (c) => {
      await c.query('SELECT pg_advisory_xact_lock($1, hashtext($2))', [LOCK_DDL, store.schema]);
      // And the graph lock: batches touch the tables only under it, so the DDL cannot deadlock with them.
      await store.lockGraph(c);
      for (const sql of schemaSql(store.s)) await c.query(sql);
    });
    return store;
  }

  /**
   * Creates `events_with_profile` when the `events` table exists in the schema (the warehouse
   * creates it). Call it after both stores are open; returns whether the view exists.
   */
  async ensureViews(): Promise<boolean> {
    return this.transaction(async (c) => {
      await c.query('SELECT pg_advisory_xact_lock($1, hashtext($2))', [LOCK_DDL, this.schema]);
      const r = await c.query<{ t: string | null }>('SELECT to_regclass($1)::text AS t', [
        `${this.s}.events`,
      ]);
      if (r.rows[0]?.t == null) return false;
      await c.query(`CREATE OR REPLACE VIEW ${this.s}.events_with_profile AS
        SELECT e.*, pe.profile_id FROM ${this.s}.events e
        LEFT JOIN ${this.s}.profile_events pe USING (log_offset, message_id)`);
      return true;
    });
  }

  /** Runs `fn` in one transaction on a pooled client; rolls back if it throws. */
  async transaction<T>(fn: (c: pg.PoolClient) => Promise<T>): Promise<T> {
    const c = await this.pool.connect();
    let broken = false;
    // A connection PostgreSQL ends meanwhile (idle timeout, restart) is reported here, not as
    // an unhandled 'error' event; the next query fails and the client is discarded.
    const onError = () => {
      broken = true;
    };
    c.on('error', onError);
    try {
      await c.query(this.begin);
      const result = await fn(c);
      await c.query('COMMIT');
      return result;
    } catch (err) {
      await c.query('ROLLBACK').catch(() => {
        broken = true;
      });
      throw err;
    } finally {
      c.off('error', onError);
      c.release(broken);
    }
  }

  /** Takes the transaction-scoped lock every writer of this schema's identity graph holds. */
  async lockGraph(c: Queryable): Promise<void> {
    await c.query('SELECT pg_advisory_xact_lock($1, hashtext($2))', [LOCK_GRAPH, this.schema]);
  }

  // ---- offsets ----

  async offsetOf(consumer: string, c: Queryable = this.pool): Promise<number> {
    const r = await c.query<{ n: string }>(
      `SELECT next_offset AS n FROM ${this.s}.identity_offsets WHERE consumer = $1`,
      [consumer],
    );
    return Number(r.rows[0]?.n ?? 0);
  }

  /**
   * Moves a consumer's offset from `expected` to `next` (compare-and-set, in the caller's
   * transaction). Throws `TRIB_ERR_STATE_OFFSET_MOVED` when the stored offset is not
   * `expected` (another worker committed for this consumer): the caller rolls back.
   */
  async moveOffset(c: Queryable, consumer: string, expected: number, next: number): Promise<void> {
    const u = await c.query(
      `UPDATE ${this.s}.identity_offsets SET next_offset = $3, updated_at = now()
       WHERE consumer = $1 AND next_offset = $2`,
      [consumer, Math.trunc(expected), Math.trunc(next)],
    );
    if (u.rowCount === 1) return;
    if (expected === 0) {
      const i = await c.query(
        `INSERT INTO ${this.s}.identity_offsets VALUES ($1, $2, now()) ON CONFLICT (consumer) DO NOTHING`,
        [consumer, Math.trunc(next)],
      );
      if (i.rowCount === 1) return;
    }
    const stored = await this.offsetOf(consumer, c);
    throw new TributaryError('TRIB_ERR_STATE_OFFSET_MOVED', [consumer, stored, expected]);
  }

  // ---- loading ----

  /**
   * What a batch with these identifiers can touch: the profiles holding any of them, whole
   * (identifiers, traits, computed traits), and the blocks naming any identifier of those
   * profiles or of the batch. Merges are not needed to resolve (they only redirect old ids).
   */
  async loadWorkingSet(c: Queryable, keys: readonly string[]): Promise<IdentitySnapshot> {
    if (keys.length === 0) return { profiles: [], merges: [], blocks: [] };
    const types: string[] = [];
    const values: string[] = [];
    for (const k of keys) {
      // Split at the first colon: types have none; a value may be anything, even empty.
      const i = k.indexOf(':');
      types.push(k.slice(0, i));
      values.push(k.slice(i + 1));
    }
    const r = await c.query<{ profile_id: string }>(
      `SELECT DISTINCT i.profile_id FROM unnest($1::text[], $2::text[]) AS k(type, value)
       JOIN ${this.s}.profile_identifiers i ON i.type = k.type AND i.value = k.value`,
      [types, values],
    );
    const profiles = await this.loadProfiles(
      c,
      r.rows.map((row) => row.profile_id),
    );
    const all = new Set(keys);
    for (const p of profiles) for (const k of p.identifiers.keys()) all.add(k);
    const blocks = await this.loadBlocks(c, [...all]);
    return { profiles, merges: [], blocks };
  }

  /** Profiles by id, whole. */
  async loadProfiles(c: Queryable, ids: readonly string[] | null): Promise<Profile[]> {
    if (ids !== null && ids.length === 0) return [];
    const where = ids === null ? '' : 'WHERE profile_id = ANY($1::text[])';
    const params = ids === null ? [] : [ids];
    const byId = new Map<string, Profile>();
    const p = await c.query<{ id: string; f: number; l: number; n: string; o: string }>(
      `SELECT profile_id AS id, ${ms('first_seen')} AS f, ${ms('last_seen')} AS l, event_count AS n,
              created_offset AS o FROM ${this.s}.profiles ${where}`,
      params,
    );
    for (const row of p.rows) {
      byId.set(row.id, {
        id: row.id,
        identifiers: new Map(),
        traits: new Map(),
        computed: new Map(),
        firstSeen: row.f,
        lastSeen: row.l,
        eventCount: Number(row.n),
        createdOffset: Number(row.o),
      });
    }
    const i = await c.query<{ id: string; type: string; value: string; f: number; s: string; o: string }>(
      `SELECT profile_id AS id, type, value, ${ms('first_seen')} AS f, source_id AS s, log_offset AS o
       FROM ${this.s}.profile_identifiers ${where} ORDER BY log_offset, type, value`,
      params,
    );
    for (const row of i.rows) {
      byId.get(row.id)?.identifiers.set(identifierKey(row.type, row.value), {
        type: row.type,
        value: row.value,
        firstSeen: row.f,
        sourceId: row.s,
        logOffset: Number(row.o),
      });
    }
    const t = await c.query<{
      id: string;
      trait: string;
      v: string | null;
      ts: number;
      s: string;
      o: string;
    }>(
      `SELECT profile_id AS id, trait, value::text AS v, ${ms('"timestamp"')} AS ts, source_id AS s, log_offset AS o
       FROM ${this.s}.profile_traits ${where}`,
      params,
    );
    for (const row of t.rows) {
      byId.get(row.id)?.traits.set(row.trait, {
        value: row.v === null ? null : JSON.parse(row.v),
        timestamp: row.ts,
        sourceId: row.s,
        logOffset: Number(row.o),
      });
    }
    const ct = await c.query<{ id: string; name: string; state: string }>(
      `SELECT profile_id AS id, name, state::text AS state FROM ${this.s}.profile_computed_traits ${where}`,
      params,
    );
    for (const row of ct.rows) byId.get(row.id)?.computed.set(row.name, computedFromJson(row.state));
    return [...byId.values()];
  }

  /** Blocks naming any of the identifiers (all blocks when `keys` is null). */
  async loadBlocks(c: Queryable, keys: readonly string[] | null): Promise<Block[]> {
    if (keys !== null && keys.length === 0) return [];
    const r = await c.query<{ id: string; m: string; a: string[]; b: string[]; at: number }>(
      `SELECT block_id AS id, merge_id AS m, side_a AS a, side_b AS b, ${ms('created_at')} AS at
       FROM ${this.s}.profile_blocks ${keys === null ? '' : 'WHERE side_a ?| $1::text[] OR side_b ?| $1::text[]'}`,
      keys === null ? [] : [keys],
    );
    return r.rows.map((row) => ({
      blockId: row.id,
      mergeId: row.m,
      sideA: row.a,
      sideB: row.b,
      createdAt: row.at,
    }));
  }

  private async loadMerges(c: Queryable, where: string, params: unknown[]): Promise<MergeRecord[]> {
    const r = await c.query<{
      id: string;
      p: string;
      m: string;
      o: string;
      msg: string;
      ts: number;
      sa: string;
      sb: string;
      u: number | null;
      b: string | null;
    }>(
      `SELECT merge_id AS id, profile_id AS p, merged_profile_id AS m, log_offset AS o, message_id AS msg,
              ${ms('"timestamp"')} AS ts, survivor_identifiers::text AS sa, merged_identifiers::text AS sb,
              ${ms('unmerged_at')} AS u, block_id AS b
       FROM ${this.s}.profile_merges ${where} ORDER BY log_offset, merge_id`,
      params,
    );
    return r.rows.map((row) => ({
      mergeId: row.id,
      profileId: row.p,
      mergedProfileId: row.m,
      logOffset: Number(row.o),
      messageId: row.msg,
      timestamp: row.ts,
      survivorIdentifiers: JSON.parse(row.sa) as string[],
      mergedIdentifiers: JSON.parse(row.sb) as string[],
      unmergedAt: row.u,
      blockId: row.b,
    }));
  }

  /** The live profile an id names now: itself, or where its merges led (undefined when gone). */
  async currentProfile(id: string, c: Queryable = this.pool): Promise<string | undefined> {
    const r = await c.query<{ id: string }>(
      `SELECT p.profile_id AS id FROM (
         SELECT $1::text AS id UNION ALL
         SELECT current_profile_id FROM ${this.s}.profile_aliases WHERE profile_id = $1) x
       JOIN ${this.s}.profiles p ON p.profile_id = x.id LIMIT 1`,
      [id],
    );
    return r.rows[0]?.id;
  }

  /** Profile ids the active merges led into `id` (transitively), with `id` itself. */
  private async component(c: Queryable, id: string): Promise<string[]> {
    const r = await c.query<{ id: string }>(
      `WITH RECURSIVE comp(id) AS (
         SELECT $1::text
         UNION SELECT m.merged_profile_id FROM ${this.s}.profile_merges m JOIN comp ON m.profile_id = comp.id
         WHERE m.unmerged_at IS NULL)
       SELECT id FROM comp`,
      [id],
    );
    return r.rows.map((row) => row.id);
  }

  /** The merges (active or undone) of the profiles merged into `profileId`, in log order. */
  async mergesOf(profileId: string, c: Queryable = this.pool): Promise<MergeRecord[]> {
    const comp = await this.component(c, profileId);
    return this.loadMerges(c, 'WHERE profile_id = ANY($1::text[]) OR merged_profile_id = ANY($1::text[])', [
      comp,
    ]);
  }

  /**
   * Everything an unmerge of `mergeId` needs (call under the graph lock): the merge, the
   * profile it lives in now, that profile's events, the profiles holding any identifier of
   * those events (the replay must not take identifiers other profiles hold), the active
   * merges into the profile (their redirects go), and the blocks naming any of it.
   */
  async loadUnmerge(
    c: Queryable,
    mergeId: string,
    keysOf: (e: StoredEvent) => readonly string[],
  ): Promise<UnmergeSet | undefined> {
    const [merge] = await this.loadMerges(c, 'WHERE merge_id = $1 AND unmerged_at IS NULL', [mergeId]);
    if (!merge) return undefined;
    const currentId = await this.currentProfile(merge.profileId, c);
    if (currentId === undefined) return undefined;
    const events = await this.eventsOfProfile(currentId, c);
    const keys = new Set<string>();
    for (const e of events) for (const k of keysOf(e)) keys.add(k);
    const ws = await this.loadWorkingSet(c, [...keys]);
    if (!ws.profiles.some((p) => p.id === currentId))
      ws.profiles.push(...(await this.loadProfiles(c, [currentId])));
    const all = new Set(keys);
    for (const p of ws.profiles) for (const k of p.identifiers.keys()) all.add(k);
    const blocks = await this.loadBlocks(c, [...all]);
    const comp = await this.component(c, currentId);
    const merges = await this.loadMerges(c, 'WHERE profile_id = ANY($1::text[]) AND unmerged_at IS NULL', [
      comp,
    ]);
    return { merge, currentId, snapshot: { profiles: ws.profiles, merges, blocks }, events };
  }

  // ---- writing ----

  /**
   * Writes what a batch changed in the caller's transaction (the DuckDB store's commit,
   * ported): the rows of each changed profile are rewritten, removed profiles deleted, and
   * assignments, decisions, merges, blocks and aliases written. `profile(id)` is read before
   * the first await.
   */
  async write(
    c: pg.ClientBase,
    changes: IdentityChanges,
    profile: (id: string) => Profile | undefined,
  ): Promise<void> {
    await this.writePrepared(c, this.prepare(changes, profile));
  }

  /** The rows of a change set, read now (the engine may go on changing its profiles). */
  prepare(changes: IdentityChanges, profile: (id: string) => Profile | undefined): PreparedChanges {
    return { changes, rows: snapshotProfiles(changes.dirty, profile, this.computed, this.now()) };
  }

  async writePrepared(c: pg.ClientBase, prepared: PreparedChanges): Promise<void> {
    const { changes, rows: snapshot } = prepared;
    const s = this.s;
    if (changes.dirty.size + changes.removed.size > 0) {
      for (const [table, bit] of PROFILE_TABLES) {
        const ids: string[] = [];
        // The `profiles` row of a live profile is upserted below, not deleted.
        for (const [id, bits] of changes.dirty) if (bits & bit & ~Dirty.row) ids.push(id);
        for (const id of changes.removed) ids.push(id);
        if (ids.length > 0)
          await c.query(`DELETE FROM ${s}.${table} WHERE profile_id = ANY($1::text[])`, [ids]);
      }
    }
    if (changes.replacedOffsets.length > 0) {
      for (const table of ['profile_event_assignments', 'identity_decisions'])
        await c.query(`DELETE FROM ${s}.${table} WHERE log_offset = ANY($1::bigint[])`, [
          changes.replacedOffsets,
        ]);
    }
    if (changes.unaliased.length > 0) {
      await c.query(
        `DELETE FROM ${s}.profile_aliases WHERE current_profile_id = ANY($1::text[]) OR profile_id = ANY($1::text[])`,
        [changes.unaliased],
      );
    }
    const mergeIds = [...changes.deletedMerges, ...changes.unmerged.map((m) => m.mergeId)];
    if (mergeIds.length > 0)
      await c.query(`DELETE FROM ${s}.profile_merges WHERE merge_id = ANY($1::text[])`, [mergeIds]);
    if (snapshot.length > 0) await this.writeProfiles(c, snapshot);
    await copyInto(
      c,
      `${s}.profile_event_assignments`,
      ['log_offset', 'message_id', 'profile_id'],
      changes.assignments.map((x) => [x.logOffset, x.messageId, x.profileId]),
    );
    if (changes.decisions.length > 0) await this.writeDecisions(c, changes.decisions);
    const merges = [...changes.merges, ...changes.unmerged];
    if (merges.length > 0) {
      await c.query(
        `INSERT INTO ${s}.profile_merges
         SELECT m, p, mp, o, msg, to_timestamp(ts / 1000), sa::json, sb::json,
                CASE WHEN u IS NULL THEN NULL ELSE to_timestamp(u / 1000) END, b
         FROM unnest($1::text[], $2::text[], $3::text[], $4::bigint[], $5::text[], $6::float8[], $7::text[],
                     $8::text[], $9::float8[], $10::text[]) AS x(m, p, mp, o, msg, ts, sa, sb, u, b)`,
        [
          merges.map((m) => m.mergeId),
          merges.map((m) => m.profileId),
          merges.map((m) => m.mergedProfileId),
          merges.map((m) => m.logOffset),
          merges.map((m) => m.messageId),
          merges.map((m) => m.timestamp),
          merges.map((m) => JSON.stringify(m.survivorIdentifiers)),
          merges.map((m) => JSON.stringify(m.mergedIdentifiers)),
          merges.map((m) => m.unmergedAt),
          merges.map((m) => m.blockId),
        ],
      );
    }
    if (changes.blocks.length > 0) {
      const b = changes.blocks;
      await c.query(
        `INSERT INTO ${s}.profile_blocks
         SELECT id, m, a::jsonb, bb::jsonb, to_timestamp(at / 1000)
         FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::float8[]) AS x(id, m, a, bb, at)`,
        [
          b.map((x) => x.blockId),
          b.map((x) => x.mergeId),
          b.map((x) => JSON.stringify(x.sideA)),
          b.map((x) => JSON.stringify(x.sideB)),
          b.map((x) => x.createdAt),
        ],
      );
    }
    if (changes.remap.size > 0) {
      const olds = [...changes.remap.keys()];
      const news = [...changes.remap.values()];
      await c.query(
        `UPDATE ${s}.profile_aliases a SET current_profile_id = r.new_id
         FROM unnest($1::text[], $2::text[]) AS r(old_id, new_id) WHERE a.current_profile_id = r.old_id`,
        [olds, news],
      );
      await c.query(
        `INSERT INTO ${s}.profile_aliases SELECT * FROM unnest($1::text[], $2::text[])
         ON CONFLICT (profile_id) DO UPDATE SET current_profile_id = EXCLUDED.current_profile_id`,
        [olds, news],
      );
    }
  }

  private async writeProfiles(c: pg.ClientBase, rows: readonly ProfileRows[]): Promise<void> {
    const s = this.s;
    const updatedAt = iso(this.now());
    const pr = rows.filter((r) => r.row);
    if (pr.length > 0) {
      await c.query(
        `INSERT INTO ${s}.profiles
         SELECT id, to_timestamp(f / 1000), to_timestamp(l / 1000), n, o, now()
         FROM unnest($1::text[], $2::float8[], $3::float8[], $4::bigint[], $5::bigint[]) AS x(id, f, l, n, o)
         ON CONFLICT (profile_id) DO UPDATE SET first_seen = EXCLUDED.first_seen, last_seen = EXCLUDED.last_seen,
           event_count = EXCLUDED.event_count, updated_at = EXCLUDED.updated_at`,
        [
          pr.map((r) => r.id),
          pr.map((r) => r.firstSeen),
          pr.map((r) => r.lastSeen),
          pr.map((r) => r.eventCount),
          pr.map((r) => r.createdOffset),
        ],
      );
    }
    const ids: CopyValue[][] = [];
    const traits: CopyValue[][] = [];
    const computed: CopyValue[][] = [];
    for (const p of rows) {
      for (const i of p.identifiers)
        ids.push([p.id, i.type, i.value, iso(i.firstSeen), i.sourceId, i.logOffset]);
      for (const [name, t] of p.traits)
        traits.push([p.id, name, JSON.stringify(t.value ?? null), iso(t.timestamp), t.sourceId, t.logOffset]);
      for (const [name, value, state] of p.computed) computed.push([p.id, name, value, state, updatedAt]);
    }
    await copyInto(
      c,
      `${s}.profile_identifiers`,
      ['profile_id', 'type', 'value', 'first_seen', 'source_id', 'log_offset'],
      ids,
    );
    await copyInto(
      c,
      `${s}.profile_traits`,
      ['profile_id', 'trait', 'value', '"timestamp"', 'source_id', 'log_offset'],
      traits,
    );
    await copyInto(
      c,
      `${s}.profile_computed_traits`,
      ['profile_id', 'name', 'value', 'state', 'updated_at'],
      computed,
    );
  }

  private async writeDecisions(c: pg.ClientBase, ds: readonly Decision[]): Promise<void> {
    await copyInto(
      c,
      `${this.s}.identity_decisions`,
      DECISION_COLUMNS,
      ds.map((d) => [
        d.logOffset,
        d.messageId,
        d.action,
        d.limited,
        d.profileId,
        JSON.stringify(d.identifiers),
        d.leftOut.length === 0 ? '[]' : JSON.stringify(d.leftOut),
        d.involved.length === 0 ? '[]' : JSON.stringify(d.involved),
        d.rule,
        d.sourceId,
        iso(d.timestamp),
      ]),
    );
  }

  // ---- reads ----

  /** Which profile holds each identifier key (absent keys are left out). */
  async holders(keys: readonly string[], c: Queryable = this.pool): Promise<Map<string, string>> {
    const out = new Map<string, string>();
    const types: string[] = [];
    const values: string[] = [];
    for (const k of keys) {
      // Split at the first colon: types have none; a value may be anything, even empty.
      const i = k.indexOf(':');
      types.push(k.slice(0, i));
      values.push(k.slice(i + 1));
    }
    if (types.length === 0) return out;
    const r = await c.query<{ type: string; value: string; id: string }>(
      `SELECT i.type, i.value, i.profile_id AS id FROM unnest($1::text[], $2::text[]) AS k(type, value)
       JOIN ${this.s}.profile_identifiers i ON i.type = k.type AND i.value = k.value`,
      [types, values],
    );
    for (const row of r.rows) out.set(identifierKey(row.type, row.value), row.id);
    return out;
  }

  /** Live profiles whose trait, as text, equals `value`. */
  async searchTrait(trait: string, value: string, limit: number): Promise<string[]> {
    const r = await this.pool.query<{ id: string }>(
      `SELECT profile_id AS id FROM ${this.s}.profile_traits
       WHERE trait = $1 AND left(value #>> '{}', 200) = left($2, 200) AND value #>> '{}' = $2
       ORDER BY profile_id LIMIT $3`,
      [trait, value, Math.trunc(limit)],
    );
    return r.rows.map((row) => row.id);
  }

  /** Rows of `profile_events` for one live profile, as an indexable subquery. */
  private eventsOf(param: string): string {
    return `(SELECT log_offset, message_id FROM ${this.s}.profile_event_assignments WHERE profile_id = ${param}
             AND NOT EXISTS (SELECT 1 FROM ${this.s}.profile_aliases al WHERE al.profile_id = ${param})
             UNION ALL
             SELECT a.log_offset, a.message_id FROM ${this.s}.profile_aliases al
             JOIN ${this.s}.profile_event_assignments a ON a.profile_id = al.profile_id
             WHERE al.current_profile_id = ${param})`;
  }

  async eventsOfProfile(profileId: string, c: Queryable = this.pool): Promise<StoredEvent[]> {
    const r = await c.query<{ o: string; s: string; m: string; r: number; j: string }>(
      `SELECT e.log_offset AS o, e.source_id AS s, e.message_id AS m, ${ms('e.received_at')} AS r, e.payload::text AS j
       FROM ${this.eventsOf('$1')} pe JOIN ${this.s}.events e USING (log_offset, message_id)
       ORDER BY e.log_offset, e.message_id`,
      [profileId],
    );
    return r.rows.map((row) => ({
      logOffset: Number(row.o),
      sourceId: row.s,
      messageId: row.m,
      receivedAt: row.r,
      json: row.j,
    }));
  }

  async recentEvents(profileId: string, limit: number): Promise<ProfileEvent[]> {
    const r = await this.pool.query<{
      o: string;
      m: string;
      s: string;
      t: string;
      e: string | null;
      ts: string;
    }>(
      `SELECT e.log_offset AS o, e.message_id AS m, e.source_id AS s, e.type AS t, e.event AS e,
              to_char(e."timestamp" AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"') AS ts
       FROM ${this.eventsOf('$1')} pe JOIN ${this.s}.events e USING (log_offset, message_id)
       ORDER BY e."timestamp" DESC, e.log_offset DESC LIMIT $2`,
      [profileId, Math.trunc(limit)],
    );
    return r.rows.map((row) => ({
      logOffset: Number(row.o),
      messageId: row.m,
      sourceId: row.s,
      type: row.t,
      event: row.e,
      timestamp: row.ts,
    }));
  }

  async decisions(
    profileIds: readonly string[],
    identifiers: readonly string[],
    limit: number,
  ): Promise<Decision[]> {
    if (profileIds.length === 0 && identifiers.length === 0) return [];
    const parts: string[] = [];
    const params: unknown[] = [];
    for (const id of profileIds) {
      params.push(id);
      parts.push(`SELECT log_offset, message_id FROM ${this.eventsOf(`$${params.length}::text`)} x`);
    }
    if (identifiers.length > 0) {
      params.push(identifiers);
      parts.push(
        `SELECT log_offset, message_id FROM ${this.s}.identity_decisions WHERE identifiers ?| $${params.length}::text[]`,
      );
    }
    params.push(Math.trunc(limit));
    const r = await this.pool.query<{
      o: string;
      m: string;
      s: string;
      ts: number;
      a: Decision['action'];
      l: boolean;
      p: string | null;
      inv: string;
      ids: string[];
      lo: string;
      rule: string;
    }>(
      `SELECT d.log_offset AS o, d.message_id AS m, d.source_id AS s, ${ms('d."timestamp"')} AS ts, d.action AS a,
              d.limited AS l, d.profile_id AS p, d.involved::text AS inv, d.identifiers AS ids, d.left_out::text AS lo,
              d.rule
       FROM ${this.s}.identity_decisions d
       WHERE (d.log_offset, d.message_id) IN (${parts.join(' UNION ')})
       ORDER BY d.log_offset, d.message_id LIMIT $${params.length}`,
      params,
    );
    return r.rows.map((row) => {
      const leftOut = JSON.parse(row.lo) as Decision['leftOut'];
      const out = new Set(leftOut.map((l) => l.identifier));
      return {
        logOffset: Number(row.o),
        messageId: row.m,
        sourceId: row.s,
        timestamp: row.ts,
        action: row.a,
        limited: row.l,
        profileId: row.p,
        involved: JSON.parse(row.inv) as string[],
        identifiers: row.ids,
        accepted: row.ids.filter((k) => !out.has(k)),
        leftOut,
        rule: row.rule,
      };
    });
  }

  // ---- the IdentityStore port (the embedded stage on PostgreSQL) ----

  offset(): Promise<number> {
    return this.offsetOf(this.consumer);
  }

  async load(): Promise<IdentitySnapshot> {
    const c = await this.pool.connect();
    let broken = false;
    const onError = () => {
      broken = true; // reported by the failing query; not an unhandled 'error' event
    };
    c.on('error', onError);
    try {
      await c.query('BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY');
      const profiles = await this.loadProfiles(c, null);
      const merges = await this.loadMerges(c, '', []);
      const blocks = await this.loadBlocks(c, null);
      await c.query('COMMIT');
      return { profiles, merges, blocks };
    } catch (err) {
      await c.query('ROLLBACK').catch(() => {
        broken = true;
      });
      throw err;
    } finally {
      c.off('error', onError);
      c.release(broken);
    }
  }

  async prepareCommit(
    changes: IdentityChanges,
    profile: (id: string) => Profile | undefined,
    nextOffset: number | undefined,
  ): Promise<() => Promise<void>> {
    // Read now: the embedded stage goes on resolving while the write runs.
    const prepared = this.prepare(changes, profile);
    return () => this.commitPrepared(prepared, nextOffset);
  }

  private async commitPrepared(prepared: PreparedChanges, nextOffset: number | undefined): Promise<void> {
    await this.transaction(async (c) => {
      await this.lockGraph(c);
      await this.writePrepared(c, prepared);
      if (nextOffset !== undefined) {
        await c.query(
          `INSERT INTO ${this.s}.identity_offsets VALUES ($1, $2, now())
           ON CONFLICT (consumer) DO UPDATE SET next_offset = EXCLUDED.next_offset, updated_at = now()`,
          [this.consumer, Math.trunc(nextOffset)],
        );
      }
    });
  }

  /** The pool belongs to the caller: nothing to close. */
  async close(): Promise<void> {}
}

type CopyValue = string | number | boolean | null;

/** A value in COPY's text format. */
function copyText(v: CopyValue): string {
  if (v === null) return '\\N';
  if (typeof v === 'number') return String(v);
  if (typeof v === 'boolean') return v ? 't' : 'f';
  return /[\\\t\n\r]/.test(v)
    ? v.replace(/[\\\t\n\r]/g, (ch) =>
        ch === '\\' ? '\\\\' : ch === '\t' ? '\\t' : ch === '\n' ? '\\n' : '\\r',
      )
    : v;
}

function* copyChunks(rows: readonly CopyValue[][]): Generator<string> {
  let chunk = '';
  for (const row of rows) {
    for (let i = 0; i < row.length; i++) chunk += (i > 0 ? '\t' : '') + copyText(row[i]!);
    chunk += '\n';
    if (chunk.length >= 1 << 20) {
      yield chunk;
      chunk = '';
    }
  }
  if (chunk !== '') yield chunk;
}

/**
 * Rows into a table by `COPY … FROM STDIN` (text format): for the thousands of rows a batch
 * writes, several times cheaper than binding them as array parameters.
 */
async function copyInto(
  c: pg.ClientBase,
  table: string,
  columns: readonly string[],
  rows: readonly CopyValue[][],
): Promise<void> {
  if (rows.length === 0) return;
  await pipeline(
    Readable.from(copyChunks(rows)),
    c.query(copyFrom(`COPY ${table} (${columns.join(', ')}) FROM STDIN`)),
  );
}

const iso = (ms: number) => new Date(ms).toISOString();
