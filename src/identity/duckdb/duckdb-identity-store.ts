import {
  type DuckDBAppender,
  type DuckDBConnection,
  type DuckDBInstance,
  DuckDBTimestampValue,
} from '@duckdb/node-api';
import type { ComputedTrait } from '../../config/identity-schema.js';
import type { ErasureTarget } from '../../governance/privacy/erasure.js';
import { Slice } from '../../platform/async/slice.js';
import { containsAny, eraseRows, inList } from '../../platform/duckdb/duckdb-erase.js';
import { sqlString } from '../../platform/duckdb/duckdb-sql.js';
import type { StoredEvent } from '../../store/store.js';
import { identifierKey } from '../identifiers.js';
import {
  type Block,
  type Decision,
  Dirty,
  type HeldIdentifier,
  type IdentityChanges,
  type MergeRecord,
  type Profile,
} from '../identity-engine.js';
import type { IdentitySnapshot, IdentityStore, ProfileEvent } from '../identity-store.js';
import { type ProfileRows, snapshotProfiles } from '../profile-rows.js';
import { computedFromJson, type TraitValue } from '../traits.js';

const SCHEMA_SQL = [
  `CREATE TABLE IF NOT EXISTS profiles (
    profile_id VARCHAR NOT NULL,
    first_seen TIMESTAMPTZ NOT NULL,
    last_seen TIMESTAMPTZ NOT NULL,
    event_count BIGINT NOT NULL,
    created_offset BIGINT NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL)`,
  `CREATE TABLE IF NOT EXISTS profile_identifiers (
    profile_id VARCHAR NOT NULL,
    type VARCHAR NOT NULL,
    value VARCHAR NOT NULL,
    first_seen TIMESTAMPTZ NOT NULL,
    source_id VARCHAR NOT NULL,
    log_offset BIGINT NOT NULL)`,
  `CREATE TABLE IF NOT EXISTS profile_traits (
    profile_id VARCHAR NOT NULL,
    trait VARCHAR NOT NULL,
    value JSON,
    "timestamp" TIMESTAMPTZ NOT NULL,
    source_id VARCHAR NOT NULL,
    log_offset BIGINT NOT NULL)`,
  `CREATE TABLE IF NOT EXISTS profile_computed_traits (
    profile_id VARCHAR NOT NULL,
    name VARCHAR NOT NULL,
    value JSON,
    state JSON NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL)`,
  `CREATE TABLE IF NOT EXISTS profile_merges (
    merge_id VARCHAR NOT NULL,
    profile_id VARCHAR NOT NULL,
    merged_profile_id VARCHAR NOT NULL,
    log_offset BIGINT NOT NULL,
    message_id VARCHAR NOT NULL,
    "timestamp" TIMESTAMPTZ NOT NULL,
    survivor_identifiers JSON NOT NULL,
    merged_identifiers JSON NOT NULL,
    unmerged_at TIMESTAMPTZ,
    block_id VARCHAR)`,
  `CREATE TABLE IF NOT EXISTS profile_blocks (
    block_id VARCHAR NOT NULL,
    merge_id VARCHAR NOT NULL,
    side_a JSON NOT NULL,
    side_b JSON NOT NULL,
    created_at TIMESTAMPTZ NOT NULL)`,
  // The profile of each event: the profile it was resolved into (append-only), followed
  // through the aliases merges leave, so a merge rewrites one alias row per absorbed
  // profile instead of the mapping of every event.
  `CREATE TABLE IF NOT EXISTS profile_event_assignments (
    log_offset BIGINT NOT NULL,
    message_id VARCHAR NOT NULL,
    profile_id VARCHAR NOT NULL)`,
  `CREATE TABLE IF NOT EXISTS profile_aliases (
    profile_id VARCHAR NOT NULL,
    current_profile_id VARCHAR NOT NULL)`,
  `CREATE OR REPLACE VIEW profile_events AS
    SELECT a.log_offset, a.message_id, coalesce(al.current_profile_id, a.profile_id) AS profile_id
    FROM profile_event_assignments a LEFT JOIN profile_aliases al ON al.profile_id = a.profile_id`,
  // An event is (log_offset, message_id): the events a transformation makes of one record share
  // its log offset. Source and timestamp are in `events`: not repeated here.
  // The lists are JSON text in VARCHAR columns (DuckDB's json functions read them as they are).
  `CREATE TABLE IF NOT EXISTS identity_decisions (
    log_offset BIGINT NOT NULL,
    message_id VARCHAR NOT NULL,
    action VARCHAR NOT NULL,
    limited BOOLEAN NOT NULL,
    profile_id VARCHAR,
    identifiers VARCHAR NOT NULL,
    left_out VARCHAR NOT NULL,
    involved VARCHAR NOT NULL,
    rule VARCHAR NOT NULL)`,
  `CREATE OR REPLACE VIEW events_with_profile AS
    SELECT e.*, pe.profile_id FROM events e LEFT JOIN profile_events pe USING (log_offset, message_id)`,
  'CREATE SCHEMA IF NOT EXISTS _tributary',
  `CREATE TABLE IF NOT EXISTS _tributary.consumer_offsets (
    consumer VARCHAR PRIMARY KEY,
    next_offset BIGINT NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL)`,
  'CREATE TEMP TABLE IF NOT EXISTS _identity_ids (id VARCHAR, bits INTEGER)',
  `CREATE TEMP TABLE IF NOT EXISTS _identity_profiles (
    profile_id VARCHAR, first_seen TIMESTAMPTZ, last_seen TIMESTAMPTZ, event_count BIGINT, created_offset BIGINT)`,
  'CREATE TEMP TABLE IF NOT EXISTS _identity_offsets (log_offset BIGINT)',
  'CREATE TEMP TABLE IF NOT EXISTS _identity_remap (old_id VARCHAR, new_id VARCHAR)',
  // A transaction's rows are staged in these first, then moved by one statement (`write`).
  'CREATE TEMP TABLE IF NOT EXISTS _identity_texts (kind VARCHAR, body VARCHAR)',
  'CREATE TEMP TABLE IF NOT EXISTS _identity_computed AS SELECT * FROM profile_computed_traits LIMIT 0',
  'CREATE TEMP TABLE IF NOT EXISTS _identity_merges AS SELECT * FROM profile_merges LIMIT 0',
  'CREATE TEMP TABLE IF NOT EXISTS _identity_blocks AS SELECT * FROM profile_blocks LIMIT 0',
];

/** The staging tables, emptied after every transaction (committed or not). */
const STAGING = [
  '_identity_ids',
  '_identity_profiles',
  '_identity_offsets',
  '_identity_remap',
  '_identity_texts',
  '_identity_computed',
  '_identity_merges',
  '_identity_blocks',
] as const;
const CLEAR_STAGING = STAGING.map((t) => `DELETE FROM temp.${t}`).join(';\n');
/** The staging tables filled through appenders (the texts go in as parameters). */
const APPENDED = STAGING.filter((t) => t !== '_identity_texts');

type Staging = Record<Exclude<(typeof STAGING)[number], '_identity_texts'>, DuckDBAppender>;

/** A text staged in `_identity_texts`, as the string its statement splits. */
const staged = (kind: string) => `(SELECT body FROM temp._identity_texts WHERE kind = '${kind}')`;

const INSERT_DECISIONS_SQL = `
  INSERT INTO identity_decisions
  SELECT CAST(f[1] AS BIGINT), json_extract_string(f[2], '$'), f[3], f[4] = '1', nullif(f[5], ''), f[6], f[7], f[8], f[9]
  FROM (SELECT string_split(line, chr(9)) AS f FROM (SELECT unnest(string_split(${staged('decisions')}, chr(10))) AS line))`;

const INSERT_ASSIGNMENTS_SQL = `
  INSERT INTO profile_event_assignments
  SELECT CAST(f[1] AS BIGINT), json_extract_string(f[2], '$'), f[3]
  FROM (SELECT string_split(line, chr(9)) AS f FROM (SELECT unnest(string_split(${staged('assignments')}, chr(10))) AS line))`;

/** Epoch milliseconds as a TIMESTAMPTZ, exactly and whatever the session's time zone. */
const fromEpochMs = (field: string) =>
  `(to_timestamp(CAST(${field} AS BIGINT) // 1000) + to_milliseconds(CAST(${field} AS BIGINT) % 1000))`;

/** Lines of profile id, type, value (JSON strings), first seen (epoch ms), source (JSON string), offset. */
const INSERT_IDENTIFIERS_SQL = `
  INSERT INTO profile_identifiers
  SELECT f[1], json_extract_string(f[2], '$'), json_extract_string(f[3], '$'), ${fromEpochMs('f[4]')},
         json_extract_string(f[5], '$'), CAST(f[6] AS BIGINT)
  FROM (SELECT string_split(line, chr(9)) AS f FROM (SELECT unnest(string_split(${staged('identifiers')}, chr(10))) AS line))`;

/** Lines of profile id, trait name (JSON string), value (JSON), timestamp (epoch ms), source (JSON string), offset. */
const INSERT_TRAITS_SQL = `
  INSERT INTO profile_traits
  SELECT f[1], json_extract_string(f[2], '$'), f[3], ${fromEpochMs('f[4]')},
         json_extract_string(f[5], '$'), CAST(f[6] AS BIGINT)
  FROM (SELECT string_split(line, chr(9)) AS f FROM (SELECT unnest(string_split(${staged('traits')}, chr(10))) AS line))`;

const copyAssignmentsSql = (from: number, to: number) => `
  INSERT INTO profile_event_assignments
  SELECT log_offset, message_id, profile_id FROM identity_decisions
  WHERE log_offset BETWEEN ${Math.trunc(from)} AND ${Math.trunc(to)} AND profile_id IS NOT NULL`;

const UPSERT_PROFILES_SQL = `
  UPDATE profiles SET first_seen = t.first_seen, last_seen = t.last_seen, event_count = t.event_count, updated_at = now()
  FROM temp._identity_profiles t WHERE profiles.profile_id = t.profile_id;
  INSERT INTO profiles
  SELECT t.profile_id, t.first_seen, t.last_seen, t.event_count, t.created_offset, now() FROM temp._identity_profiles t
  WHERE NOT EXISTS (SELECT 1 FROM profiles p WHERE p.profile_id = t.profile_id)`;

const PROFILE_TABLES: [string, number][] = [
  ['profiles', Dirty.row],
  ['profile_identifiers', Dirty.identifiers],
  ['profile_traits', Dirty.traits],
  ['profile_computed_traits', Dirty.computed],
];

/**
 * A TIMESTAMPTZ column's value, appended as a plain TIMESTAMP: the same microseconds since
 * the epoch (DuckDB stores both alike), but the appender takes it natively instead of through
 * a generic value object, several times faster per call.
 */
const tz = (ms: number) => new DuckDBTimestampValue(BigInt(Math.trunc(ms)) * 1000n);

/** A batch's rows, built by `prepareCommit` for its write. */
interface PreparedBatch {
  changes: IdentityChanges;
  snapshot: ProfileRows[];
  /** The bulk rows as staged texts: kind, then lines (a kind with no rows has no text). */
  texts: [kind: string, body: string][];
  /** The offsets whose assignments are copied from the decisions (see `assignedAsDecided`). */
  copied: { from: number; to: number } | undefined;
  nextOffset: number | undefined;
}

/**
 * The identity store in the embedded DuckDB's main database, next to `events`. Each batch
 * is one transaction: the rows of every changed profile are deleted by a staged id list and
 * inserted again from staged text (`prepareCommit` builds it, the write stages and runs it),
 * so the cost is per batch, not per event.
 */
export class DuckDBIdentityStore implements IdentityStore {
  private staging: Staging | undefined;

  private constructor(
    private readonly instance: DuckDBInstance,
    private readonly writer: DuckDBConnection,
    private readonly consumer: string,
    private readonly computed: readonly ComputedTrait[],
    private readonly now: () => number,
  ) {}

  /**
   * @param options.consumer key of the stage's offset in `_tributary.consumer_offsets` (default `identity`)
   * @param options.computed computed trait definitions, to store each one's current value
   */
  static async open(
    instance: DuckDBInstance,
    options: { consumer?: string; computed?: readonly ComputedTrait[]; now?: () => number } = {},
  ): Promise<DuckDBIdentityStore> {
    const writer = await instance.connect();
    for (const sql of SCHEMA_SQL) await writer.run(sql);
    return new DuckDBIdentityStore(
      instance,
      writer,
      options.consumer ?? 'identity',
      options.computed ?? [],
      options.now ?? Date.now,
    );
  }

  async erasureOf(profileIds: readonly string[]): Promise<{ profileIds: string[]; messageIds: string[] }> {
    const ids = new Set(profileIds);
    // Aliases and merges both ways, until no new id turns up.
    for (let grew = true; grew; ) {
      grew = false;
      const r = await this.writer.runAndReadAll(
        `SELECT profile_id, current_profile_id FROM profile_aliases WHERE ${inList('profile_id', 1)} OR ${inList('current_profile_id', 1)}
         UNION ALL SELECT profile_id, merged_profile_id FROM profile_merges WHERE ${inList('profile_id', 1)} OR ${inList('merged_profile_id', 1)}`,
        [JSON.stringify([...ids])],
      );
      for (const row of r.getRows())
        for (const v of row) {
          if (v !== null && !ids.has(String(v))) {
            ids.add(String(v));
            grew = true;
          }
        }
    }
    const m = await this.writer.runAndReadAll(
      `SELECT DISTINCT message_id FROM profile_event_assignments WHERE ${inList('profile_id', 1)}`,
      [JSON.stringify([...ids])],
    );
    return { profileIds: [...ids], messageIds: m.getRows().map((r) => String(r[0])) };
  }

  async erase(target: ErasureTarget): Promise<void> {
    const conn = await this.instance.connect();
    try {
      const p = [
        JSON.stringify(target.profileIds),
        JSON.stringify(target.messageIds),
        JSON.stringify(target.values),
      ];
      const pv = JSON.stringify([...target.values, ...target.profileIds]);
      const tables: [string, string, (string | null)[]][] = [
        ['profiles', inList('profile_id', 1), p.slice(0, 1)],
        ['profile_identifiers', `${inList('profile_id', 1)} OR ${containsAny('value', 2)}`, [p[0]!, p[2]!]],
        ['profile_traits', inList('profile_id', 1), p.slice(0, 1)],
        ['profile_computed_traits', inList('profile_id', 1), p.slice(0, 1)],
        ['profile_merges', `${inList('profile_id', 1)} OR ${inList('merged_profile_id', 1)}`, p.slice(0, 1)],
        ['profile_blocks', containsAny("CAST(side_a AS VARCHAR) || ' ' || CAST(side_b AS VARCHAR)", 1), [pv]],
        [
          'profile_event_assignments',
          `${inList('profile_id', 1)} OR ${inList('message_id', 2)}`,
          p.slice(0, 2),
        ],
        [
          'profile_aliases',
          `${inList('profile_id', 1)} OR ${inList('current_profile_id', 1)}`,
          p.slice(0, 1),
        ],
        [
          'identity_decisions',
          `${inList('profile_id', 1)} OR ${inList('message_id', 2)} OR ${containsAny("identifiers || ' ' || left_out || ' ' || involved", 3)}`,
          [p[0]!, p[1]!, pv],
        ],
      ];
      const pairs = await conn.runAndReadAll(
        "SELECT count(*) FROM duckdb_tables() WHERE table_name = 'identity_match_pairs' AND database_name = current_database()",
      );
      if (Number(pairs.getRows()[0]![0]) > 0)
        tables.push([
          'identity_match_pairs',
          `${inList('profile_a', 1)} OR ${inList('profile_b', 1)} OR ${containsAny("coalesce(evidence, '')", 2)}`,
          [p[0]!, p[2]!],
        ]);
      const catalog = String((await conn.runAndReadAll('SELECT current_database()')).getRows()[0]![0]);
      for (const [name, match, params] of tables)
        await eraseRows(conn, { catalog, schema: 'main', name }, match, params as string[]);
    } finally {
      conn.closeSync();
    }
  }

  async offset(): Promise<number> {
    const r = await this.writer.runAndReadAll(
      'SELECT next_offset FROM _tributary.consumer_offsets WHERE consumer = $1',
      [this.consumer],
    );
    return Number(r.getRows()[0]?.[0] ?? 0);
  }

  async load(): Promise<IdentitySnapshot> {
    const c = this.writer;
    const byId = new Map<string, Profile>();
    const rows = async (sql: string) => (await c.runAndReadAll(sql)).getRows();
    for (const [id, first, last, count, created] of await rows(
      'SELECT profile_id, epoch_ms(first_seen), epoch_ms(last_seen), event_count, created_offset FROM profiles',
    )) {
      byId.set(String(id), {
        id: String(id),
        identifiers: new Map(),
        traits: new Map(),
        computed: new Map(),
        firstSeen: Number(first),
        lastSeen: Number(last),
        eventCount: Number(count),
        createdOffset: Number(created),
      });
    }
    for (const [id, type, value, first, source, offset] of await rows(
      'SELECT profile_id, type, value, epoch_ms(first_seen), source_id, log_offset FROM profile_identifiers',
    )) {
      const held: HeldIdentifier = {
        type: String(type),
        value: String(value),
        firstSeen: Number(first),
        sourceId: String(source),
        logOffset: Number(offset),
      };
      byId.get(String(id))?.identifiers.set(identifierKey(held.type, held.value), held);
    }
    for (const [id, trait, value, ts, source, offset] of await rows(
      `SELECT profile_id, trait, CAST(value AS VARCHAR), epoch_ms("timestamp"), source_id, log_offset FROM profile_traits`,
    )) {
      byId.get(String(id))?.traits.set(String(trait), {
        value: value === null ? null : JSON.parse(String(value)),
        timestamp: Number(ts),
        sourceId: String(source),
        logOffset: Number(offset),
      });
    }
    for (const [id, name, state] of await rows(
      'SELECT profile_id, name, CAST(state AS VARCHAR) FROM profile_computed_traits',
    )) {
      byId.get(String(id))?.computed.set(String(name), computedFromJson(String(state)));
    }
    const merges: MergeRecord[] = (
      await rows(
        `SELECT merge_id, profile_id, merged_profile_id, log_offset, message_id, epoch_ms("timestamp"),
                CAST(survivor_identifiers AS VARCHAR), CAST(merged_identifiers AS VARCHAR), epoch_ms(unmerged_at), block_id
         FROM profile_merges ORDER BY log_offset`,
      )
    ).map(([mergeId, profileId, merged, offset, messageId, ts, sa, sb, unmergedAt, blockId]) => ({
      mergeId: String(mergeId),
      profileId: String(profileId),
      mergedProfileId: String(merged),
      logOffset: Number(offset),
      messageId: String(messageId),
      timestamp: Number(ts),
      survivorIdentifiers: JSON.parse(String(sa)) as string[],
      mergedIdentifiers: JSON.parse(String(sb)) as string[],
      unmergedAt: unmergedAt === null ? null : Number(unmergedAt),
      blockId: blockId === null ? null : String(blockId),
    }));
    const blocks: Block[] = (
      await rows(
        'SELECT block_id, merge_id, CAST(side_a AS VARCHAR), CAST(side_b AS VARCHAR), epoch_ms(created_at) FROM profile_blocks',
      )
    ).map(([blockId, mergeId, a, b, at]) => ({
      blockId: String(blockId),
      mergeId: String(mergeId),
      sideA: JSON.parse(String(a)) as string[],
      sideB: JSON.parse(String(b)) as string[],
      createdAt: Number(at),
    }));
    return { profiles: [...byId.values()], merges, blocks };
  }

  async prepareCommit(
    changes: IdentityChanges,
    profile: (id: string) => Profile | undefined,
    nextOffset: number | undefined,
  ): Promise<() => Promise<void>> {
    // Read before the first await (the port's contract).
    const snapshot = snapshotProfiles(changes.dirty, profile, this.computed, this.now());
    // The bulk rows as text (tab-separated lines that DuckDB splits: cheaper for the event loop
    // than an appender call per value), built first, letting requests in between.
    const texts: [kind: string, body: string][] = [];
    if (changes.decisions.length > 0)
      texts.push(['decisions', await linesOf(changes.decisions, decisionLine)]);
    const copied = changes.assignments.length > 0 ? assignedAsDecided(changes) : undefined;
    if (changes.assignments.length > 0 && copied === undefined) {
      texts.push([
        'assignments',
        await linesOf(
          changes.assignments,
          (x) => `${x.logOffset}\t${JSON.stringify(x.messageId)}\t${x.profileId}`,
        ),
      ]);
    }
    const identifiers: [string, HeldIdentifier][] = [];
    const traits: [string, string, TraitValue][] = [];
    for (const p of snapshot) {
      for (const i of p.identifiers) identifiers.push([p.id, i]);
      for (const [name, t] of p.traits) traits.push([p.id, name, t]);
    }
    if (identifiers.length > 0) texts.push(['identifiers', await linesOf(identifiers, identifierLine)]);
    if (traits.length > 0) texts.push(['traits', await linesOf(traits, traitLine)]);
    // Nothing above touched the staging tables: an earlier write may still be using them.
    return () => this.write({ changes, snapshot, texts, copied, nextOffset });
  }

  /** One transaction that writes a prepared batch (see `prepareCommit`). */
  private async write(batch: PreparedBatch): Promise<void> {
    const { changes, snapshot, texts, copied, nextOffset } = batch;
    const hasRows = (kind: string) => texts.some(([k]) => k === kind);
    const c = this.writer;
    const staging = await this.stagingAppenders();
    try {
      // The texts go in as parameters, copied on DuckDB's thread (an appender would copy
      // megabytes on the event loop).
      if (texts.length > 0) {
        await c.run(
          `INSERT INTO temp._identity_texts VALUES ${texts.map((_, i) => `($${2 * i + 1}, $${2 * i + 2})`).join(', ')}`,
          texts.flat(),
        );
      }
      // Everything is staged in temporary tables, then one statement runs the transaction:
      // DuckDB works through it while the event loop resolves the next batch, instead of
      // waiting for the loop between statements.
      const sql = ['BEGIN TRANSACTION'];
      if (changes.dirty.size + changes.removed.size > 0) {
        const ids = staging._identity_ids;
        for (const [id, bits] of changes.dirty) {
          // The `profiles` row of a live profile is updated in place (below), not deleted.
          ids.appendVarchar(id);
          ids.appendInteger(bits & ~Dirty.row);
          ids.endRow();
        }
        for (const id of changes.removed) {
          ids.appendVarchar(id);
          ids.appendInteger(Dirty.all);
          ids.endRow();
        }
        for (const [table, bit] of PROFILE_TABLES) {
          sql.push(
            `DELETE FROM ${table} WHERE profile_id IN (SELECT id FROM temp._identity_ids WHERE bits & ${bit} <> 0)`,
          );
        }
      }
      if (changes.replacedOffsets.length > 0) {
        for (const o of changes.replacedOffsets) {
          staging._identity_offsets.appendBigInt(BigInt(o));
          staging._identity_offsets.endRow();
        }
        sql.push(
          'DELETE FROM profile_event_assignments WHERE log_offset IN (SELECT log_offset FROM temp._identity_offsets)',
          'DELETE FROM identity_decisions WHERE log_offset IN (SELECT log_offset FROM temp._identity_offsets)',
        );
      }
      if (changes.unaliased.length > 0) {
        // An unmerge reassigned every event of these profiles directly: their aliases go.
        const ids = changes.unaliased.map(sqlString).join(', ');
        sql.push(
          `DELETE FROM profile_aliases WHERE current_profile_id IN (${ids}) OR profile_id IN (${ids})`,
        );
      }
      const mergeIds = [...changes.deletedMerges, ...changes.unmerged.map((m) => m.mergeId)];
      if (mergeIds.length > 0) {
        sql.push(`DELETE FROM profile_merges WHERE merge_id IN (${mergeIds.map(sqlString).join(', ')})`);
      }
      if (snapshot.length > 0) {
        await this.stageProfiles(snapshot, staging);
        if (hasRows('identifiers')) sql.push(INSERT_IDENTIFIERS_SQL);
        if (hasRows('traits')) sql.push(INSERT_TRAITS_SQL);
        sql.push('INSERT INTO profile_computed_traits SELECT * FROM temp._identity_computed');
        // Every event changes its profile's counters: an update in place is far cheaper for
        // DuckDB than deleting and appending the row again.
        sql.push(UPSERT_PROFILES_SQL);
      }
      if (hasRows('decisions')) sql.push(INSERT_DECISIONS_SQL);
      if (copied !== undefined) {
        // A batch's events are assigned to the profiles their decisions name, and no other
        // decision lies in its range of offsets: copied from the rows just inserted.
        sql.push(copyAssignmentsSql(copied.from, copied.to));
      } else if (hasRows('assignments')) {
        sql.push(INSERT_ASSIGNMENTS_SQL);
      }
      const merges = [...changes.merges, ...changes.unmerged];
      if (merges.length > 0) {
        for (const m of merges) appendMerge(staging._identity_merges, m);
        sql.push('INSERT INTO profile_merges SELECT * FROM temp._identity_merges');
      }
      if (changes.blocks.length > 0) {
        const a = staging._identity_blocks;
        for (const b of changes.blocks) {
          a.appendVarchar(b.blockId);
          a.appendVarchar(b.mergeId);
          a.appendVarchar(JSON.stringify(b.sideA));
          a.appendVarchar(JSON.stringify(b.sideB));
          a.appendTimestamp(tz(b.createdAt));
          a.endRow();
        }
        sql.push('INSERT INTO profile_blocks SELECT * FROM temp._identity_blocks');
      }
      if (changes.remap.size > 0) {
        const r = staging._identity_remap;
        for (const [oldId, newId] of changes.remap) {
          r.appendVarchar(oldId);
          r.appendVarchar(newId);
          r.endRow();
        }
        sql.push(
          `UPDATE profile_aliases SET current_profile_id = r.new_id FROM temp._identity_remap r
           WHERE profile_aliases.current_profile_id = r.old_id`,
          `INSERT INTO profile_aliases SELECT old_id, new_id FROM temp._identity_remap`,
        );
      }
      if (nextOffset !== undefined) {
        sql.push(
          `INSERT OR REPLACE INTO _tributary.consumer_offsets VALUES (${sqlString(this.consumer)}, ${Math.trunc(nextOffset)}, now())`,
        );
      }
      sql.push('COMMIT', CLEAR_STAGING);
      for (const a of Object.values(staging)) a.flushSync();
      await c.run(sql.join(';\n'));
    } catch (err) {
      await c.run('ROLLBACK').catch(() => undefined);
      // A failed flush may leave an appender unusable: new ones next time.
      this.closeStaging();
      await c.run(CLEAR_STAGING).catch(() => undefined);
      throw err;
    }
  }

  /** The appenders of the staging tables, opened once and kept. */
  private async stagingAppenders(): Promise<Staging> {
    if (this.staging === undefined) {
      const entries = await Promise.all(
        APPENDED.map(async (t) => [t, await this.writer.createAppender(t, null, 'temp')] as const),
      );
      this.staging = Object.fromEntries(entries) as Staging;
    }
    return this.staging;
  }

  private closeStaging(): void {
    for (const a of Object.values(this.staging ?? {})) {
      try {
        a.closeSync();
      } catch {
        // already unusable
      }
    }
    this.staging = undefined;
  }

  /** The `profiles` rows and computed traits of the changed profiles, into their staging tables. */
  private async stageProfiles(rows: readonly ProfileRows[], staging: Staging): Promise<void> {
    const updated = tz(this.now());
    const pa = staging._identity_profiles;
    const ca = staging._identity_computed;
    const slice = new Slice();
    for (const p of rows) {
      if (slice.due()) await slice.pass();
      if (p.row) {
        pa.appendVarchar(p.id);
        pa.appendTimestamp(tz(p.firstSeen));
        pa.appendTimestamp(tz(p.lastSeen));
        pa.appendBigInt(BigInt(p.eventCount));
        pa.appendBigInt(BigInt(p.createdOffset));
        pa.endRow();
      }
      for (const [name, value, state] of p.computed) {
        ca.appendVarchar(p.id);
        ca.appendVarchar(name);
        ca.appendVarchar(value);
        ca.appendVarchar(state);
        ca.appendTimestamp(updated);
        ca.endRow();
      }
    }
  }

  async eventsOfProfile(profileId: string): Promise<StoredEvent[]> {
    const r = await this.read(
      `SELECT e.log_offset, e.source_id, e.message_id, epoch_ms(e.received_at), CAST(e.payload AS VARCHAR)
       FROM profile_events pe JOIN events e USING (log_offset, message_id)
       WHERE pe.profile_id = $1 ORDER BY e.log_offset`,
      [profileId],
    );
    return r.map(([logOffset, sourceId, messageId, receivedAt, json]) => ({
      logOffset: Number(logOffset),
      sourceId: String(sourceId),
      messageId: String(messageId),
      receivedAt: Number(receivedAt),
      json: String(json),
    }));
  }

  async recentEvents(profileId: string, limit: number): Promise<ProfileEvent[]> {
    const r = await this.read(
      `SELECT e.log_offset, e.message_id, e.source_id, e.type, e.event, strftime(e."timestamp", '%Y-%m-%dT%H:%M:%S.%gZ')
       FROM profile_events pe JOIN events e USING (log_offset, message_id)
       WHERE pe.profile_id = $1 ORDER BY e."timestamp" DESC, e.log_offset DESC LIMIT $2`,
      [profileId, BigInt(limit)],
    );
    return r.map(([logOffset, messageId, sourceId, type, event, timestamp]) => ({
      logOffset: Number(logOffset),
      messageId: String(messageId),
      sourceId: String(sourceId),
      type: String(type),
      event: event === null ? null : String(event),
      timestamp: String(timestamp),
    }));
  }

  async decisions(
    profileIds: readonly string[],
    identifiers: readonly string[],
    limit: number,
  ): Promise<Decision[]> {
    if (profileIds.length === 0 && identifiers.length === 0) return [];
    const conditions: string[] = [];
    if (profileIds.length > 0) {
      conditions.push(
        `EXISTS (SELECT 1 FROM profile_events pe WHERE pe.log_offset = d.log_offset AND pe.message_id = d.message_id
                 AND pe.profile_id IN (${profileIds.map(sqlString).join(', ')}))`,
      );
    }
    for (const key of identifiers)
      conditions.push(`list_contains(CAST(CAST(d.identifiers AS JSON) AS VARCHAR[]), ${sqlString(key)})`);
    const r = await this.read(
      `SELECT d.log_offset, e.message_id, e.source_id, epoch_ms(e."timestamp"), d.action, d.limited, d.profile_id,
              d.involved, d.identifiers, d.left_out, d.rule
       FROM identity_decisions d JOIN events e USING (log_offset, message_id)
       WHERE ${conditions.join(' OR ')} ORDER BY d.log_offset LIMIT ${Math.trunc(limit)}`,
      [],
    );
    return r.map(([logOffset, messageId, sourceId, ts, action, limited, profileId, inv, ids, left, rule]) => {
      const leftOut = JSON.parse(String(left)) as Decision['leftOut'];
      const all = JSON.parse(String(ids)) as string[];
      const out = new Set(leftOut.map((l) => l.identifier));
      return {
        logOffset: Number(logOffset),
        messageId: String(messageId),
        sourceId: String(sourceId),
        timestamp: Number(ts),
        action: String(action) as Decision['action'],
        limited: Boolean(limited),
        profileId: profileId === null ? null : String(profileId),
        involved: JSON.parse(String(inv)) as string[],
        identifiers: all,
        accepted: all.filter((k) => !out.has(k)),
        leftOut,
        rule: String(rule),
      };
    });
  }

  private async read(sql: string, params: (string | bigint)[]): Promise<unknown[][]> {
    const conn = await this.instance.connect();
    try {
      return (await conn.runAndReadAll(sql, params)).getRows() as unknown[][];
    } finally {
      conn.closeSync();
    }
  }

  async close(): Promise<void> {
    this.closeStaging();
    this.writer.closeSync();
  }
}

/**
 * The range of log offsets of a batch whose assignments are exactly its decisions' profiles
 * (every decision with a profile, in order), so they can be copied from `identity_decisions`;
 * undefined otherwise. Not for a replay (an unmerge): its events' offsets are spread among
 * those of other profiles' decisions, and they end in other profiles than decided.
 */
function assignedAsDecided(changes: IdentityChanges): { from: number; to: number } | undefined {
  if (changes.replacedOffsets.length > 0) return undefined;
  const { assignments } = changes;
  let from = Number.POSITIVE_INFINITY;
  let to = Number.NEGATIVE_INFINITY;
  let j = 0;
  for (const d of changes.decisions) {
    if (d.profileId === null) continue;
    const a = assignments[j++];
    if (
      a === undefined ||
      a.logOffset !== d.logOffset ||
      a.messageId !== d.messageId ||
      a.profileId !== d.profileId
    )
      return undefined;
    if (d.logOffset < from) from = d.logOffset;
    if (d.logOffset > to) to = d.logOffset;
  }
  return j === assignments.length && j > 0 ? { from, to } : undefined;
}

/** Lines built between two checks of the event loop's slice. */
const LINES_PER_CHECK = 256;

/**
 * The lines of `items` joined by newlines, letting requests in once a slice of the event loop
 * is used up (a batch is tens of thousands of lines). The items are the transaction's own
 * (taken from the engine or snapshotted before the first await), so the stage may go on
 * resolving meanwhile.
 */
async function linesOf<T>(items: readonly T[], line: (item: T) => string): Promise<string> {
  if (items.length <= LINES_PER_CHECK) return items.map(line).join('\n');
  const slice = new Slice();
  const parts: string[] = [];
  for (let i = 0; i < items.length; i += LINES_PER_CHECK) {
    if (slice.due()) await slice.pass();
    parts.push(
      items
        .slice(i, i + LINES_PER_CHECK)
        .map(line)
        .join('\n'),
    );
  }
  return parts.join('\n');
}

/** An identifier row: profile id, type, value (JSON strings), first seen (epoch ms), source (JSON string), offset. */
function identifierLine([id, i]: [string, HeldIdentifier]): string {
  return `${id}\t${JSON.stringify(i.type)}\t${JSON.stringify(i.value)}\t${Math.trunc(i.firstSeen)}\t${JSON.stringify(i.sourceId)}\t${i.logOffset}`;
}

/** A trait row: profile id, name (JSON string), value (JSON), timestamp (epoch ms), source (JSON string), offset. */
function traitLine([id, name, t]: [string, string, TraitValue]): string {
  return `${id}\t${JSON.stringify(name)}\t${JSON.stringify(t.value ?? null)}\t${Math.trunc(t.timestamp)}\t${JSON.stringify(t.sourceId)}\t${t.logOffset}`;
}

/**
 * A decision as one line of tab-separated fields in the column order of `identity_decisions`.
 * JSON text never holds a raw tab or newline, and the other fields are ours.
 */
function decisionLine(d: Decision): string {
  const rule = d.rule.includes('\t') || d.rule.includes('\n') ? d.rule.replace(/[\t\n]/g, ' ') : d.rule;
  return `${d.logOffset}\t${JSON.stringify(d.messageId)}\t${d.action}\t${d.limited ? 1 : 0}\t${d.profileId ?? ''}\t${JSON.stringify(d.identifiers)}\t${
    d.leftOut.length === 0 ? '[]' : JSON.stringify(d.leftOut)
  }\t${d.involved.length === 0 ? '[]' : JSON.stringify(d.involved)}\t${rule}`;
}

function appendMerge(a: DuckDBAppender, m: MergeRecord): void {
  a.appendVarchar(m.mergeId);
  a.appendVarchar(m.profileId);
  a.appendVarchar(m.mergedProfileId);
  a.appendBigInt(BigInt(m.logOffset));
  a.appendVarchar(m.messageId);
  a.appendTimestamp(tz(m.timestamp));
  a.appendVarchar(JSON.stringify(m.survivorIdentifiers));
  a.appendVarchar(JSON.stringify(m.mergedIdentifiers));
  if (m.unmergedAt === null) a.appendNull();
  else a.appendTimestamp(tz(m.unmergedAt));
  if (m.blockId === null) a.appendNull();
  else a.appendVarchar(m.blockId);
  a.endRow();
}
