import { randomUUID } from 'node:crypto';
import { type DuckDBConnection, type DuckDBInstance, type DuckDBValue, listValue } from '@duckdb/node-api';
import { sqlString } from '../../platform/duckdb/duckdb-sql.js';
import { Dirty, type IdentityChanges, type MatchedMerge, type Profile } from '../identity-engine.js';
import { Matcher, type MatchModel, type PairExplanation, type ScoredPair } from './matcher.js';
import { type MatchingConfig, MatchSettings } from './matching-schema.js';

/** What matching needs of the identity stage (the embedded `IdentityStage`). */
export interface MatchingIdentity {
  lookup(text: string): Profile | undefined;
  currentProfile(id: string): string | undefined;
  mergeMatched(pairs: readonly { a: string; b: string; tag: string }[], at?: number): Promise<MatchedMerge[]>;
}

export type PairStatus = 'merged' | 'review' | 'accepted' | 'rejected' | 'refused';

/** A pair of profiles the matcher found, and what became of it. */
export interface MatchPair {
  pairId: string;
  profileA: string;
  profileB: string;
  probability: number;
  weight: number;
  status: PairStatus;
  /** Why a merge was refused (a limit, a blocked link). */
  reason: string | null;
  mergeId: string | null;
  createdAt: string;
  decidedAt: string | null;
  /** The waterfall when the pair was found (the records as they were then). */
  evidence?: PairExplanation;
}

export interface MatchRunSummary {
  records: number;
  candidatePairs: number;
  merged: number;
  refused: number;
  review: number;
  ms: number;
}

/** Thrown for a pair id that names no pair, or a decision on a pair not under review. */
export class MatchPairError extends Error {
  constructor(
    readonly kind: 'not_found' | 'not_in_review' | 'no_model',
    message: string,
  ) {
    super(message);
  }
}

const SCHEMA_SQL = [
  `CREATE TABLE IF NOT EXISTS identity_match_models (
    created_at TIMESTAMPTZ NOT NULL,
    model VARCHAR NOT NULL)`,
  `CREATE TABLE IF NOT EXISTS identity_match_pairs (
    pair_id VARCHAR NOT NULL,
    profile_a VARCHAR NOT NULL,
    profile_b VARCHAR NOT NULL,
    probability DOUBLE NOT NULL,
    weight DOUBLE NOT NULL,
    status VARCHAR NOT NULL,
    reason VARCHAR,
    merge_id VARCHAR,
    created_at TIMESTAMPTZ NOT NULL,
    decided_at TIMESTAMPTZ,
    evidence VARCHAR)`,
  `CREATE TEMP TABLE IF NOT EXISTS _profile_match_new (
    pair_id VARCHAR, a VARCHAR, b VARCHAR, probability DOUBLE, weight DOUBLE, status VARCHAR, reason VARCHAR, merge_id VARCHAR)`,
];

/** Tag of a probabilistic merge, in the merge record's message id. */
export const PROBABILISTIC_TAG = 'probabilistic:';

/**
 * Probabilistic matching of the embedded identity store's profiles: records are profiles
 * (their traits and identifiers, mapped to fields per source), matched in the server's
 * DuckDB (own connection, temporary tables). Pairs from `autoMerge` merge through the
 * identity stage (rule `probabilistic`: within the limits and blocks, undone by unmerge);
 * pairs from `review` go to the review list, where a decision is kept: a rejected pair is
 * never proposed again. One run at a time.
 */
export class ProfileMatching {
  private model: MatchModel | undefined;
  private loadedAt = 0;
  private queue: Promise<unknown> = Promise.resolve();
  private readonly matcher: Matcher;
  private readonly settings: MatchSettings;

  private constructor(
    private readonly conn: DuckDBConnection,
    private readonly identity: MatchingIdentity,
    readonly config: MatchingConfig,
    private readonly now: () => number,
  ) {
    this.settings = MatchSettings.parse({
      fields: config.fields,
      blocking: config.blocking,
      autoMerge: config.autoMerge,
      review: config.review,
      guard: config.guard,
      maxBlockSize: config.maxBlockSize,
    });
    this.matcher = new Matcher(conn, this.settings, 'profile_match');
  }

  static async open(
    instance: DuckDBInstance,
    identity: MatchingIdentity,
    config: MatchingConfig,
    options: { now?: () => number } = {},
  ): Promise<ProfileMatching> {
    const conn = await instance.connect();
    for (const sql of SCHEMA_SQL) await conn.run(sql);
    const m = new ProfileMatching(conn, identity, config, options.now ?? Date.now);
    const rows = (
      await conn.runAndReadAll('SELECT model FROM identity_match_models ORDER BY created_at DESC LIMIT 1')
    ).getRows();
    if (rows.length > 0) m.model = JSON.parse(String(rows[0]![0])) as MatchModel;
    return m;
  }

  /** The trained model, if a full run has trained one. */
  currentModel(): MatchModel | undefined {
    return this.model;
  }

  private serial<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.queue.then(fn, fn);
    this.queue = run.catch(() => undefined);
    return run;
  }

  /**
   * The profiles as records: per field, the first of its traits (per source: `sources`, else
   * the field's `traits`) or the first-seen identifier of its type.
   */
  recordsSql(): string {
    const map: string[] = [];
    const ids: string[] = [];
    for (const f of this.settings.fields) {
      if (f.identifier) {
        ids.push(`(${sqlString(f.identifier)}, ${sqlString(f.name)})`);
        continue;
      }
      (f.traits ?? [f.name]).forEach((t, i) => {
        map.push(`(NULL, ${sqlString(t)}, ${sqlString(f.name)}, ${100 + i})`);
      });
      for (const [source, fields] of Object.entries(this.config.sources)) {
        (fields[f.name] ?? []).forEach((t, i) => {
          map.push(`(${sqlString(source)}, ${sqlString(t)}, ${sqlString(f.name)}, ${i})`);
        });
      }
    }
    const parts: string[] = [];
    if (map.length > 0)
      parts.push(`SELECT t.profile_id, m.field, json_extract_string(t.value, '$') AS v, m.rank AS rank
        FROM profile_traits t JOIN (VALUES ${map.join(', ')}) m(source_id, trait, field, rank)
          ON m.trait = t.trait AND (m.source_id IS NULL OR m.source_id = t.source_id)`);
    if (ids.length > 0)
      parts.push(`SELECT i.profile_id, m.field, i.value AS v, epoch_ms(i.first_seen) AS rank
        FROM profile_identifiers i JOIN (VALUES ${ids.join(', ')}) m(type, field) ON m.type = i.type`);
    const cols = this.settings.fields.map(
      (f) => `arg_min(v, rank) FILTER (WHERE field = ${sqlString(f.name)}) AS "${f.name}"`,
    );
    return `SELECT p.profile_id AS id, ${cols.join(', ')}
      FROM profiles p LEFT JOIN (${parts.join(' UNION ALL ')}) x ON x.profile_id = p.profile_id
      GROUP BY p.profile_id`;
  }

  /** A full run: every profile, parameters estimated again, then merges and the review list. */
  run(): Promise<MatchRunSummary> {
    return this.serial(async () => {
      const t0 = performance.now();
      const records = await this.matcher.load(this.recordsSql());
      this.loadedAt = this.now();
      const candidatePairs = await this.matcher.candidates();
      const model = await this.matcher.estimate();
      await this.conn.run('INSERT INTO identity_match_models VALUES (now(), $1)', [JSON.stringify(model)]);
      this.model = model;
      const applied = await this.apply(model);
      return { records, candidatePairs, ...applied, ms: performance.now() - t0 };
    });
  }

  /**
   * Matches these profiles (new or changed) against all others through the same blocking,
   * with the model of the last full run; nothing when no full run has trained one.
   */
  matchProfiles(profileIds: readonly string[]): Promise<MatchRunSummary | undefined> {
    return this.serial(async () => {
      const model = this.model;
      if (!model || profileIds.length === 0) return undefined;
      const t0 = performance.now();
      const records = await this.matcher.load(this.recordsSql());
      this.loadedAt = this.now();
      const candidatePairs = await this.matcher.candidates(profileIds);
      const applied = await this.apply(model);
      return { records, candidatePairs, ...applied, ms: performance.now() - t0 };
    });
  }

  /** Merges the guarded clusters' links from `autoMerge`, lists the pairs from `review`. */
  private async apply(model: MatchModel): Promise<{ merged: number; refused: number; review: number }> {
    const rejected = await this.rejectedPairs();
    const isRejected = (a: string, b: string) => rejected.has(this.pairKey(a, b));
    const result = await this.matcher.match(model, this.settings.autoMerge);
    const links = result.links.filter((l) => !isRejected(l.a, l.b));
    const ids = links.map(() => randomUUID());
    const outcomes = await this.identity.mergeMatched(
      links.map((l, i) => ({ a: l.a, b: l.b, tag: `${PROBABILISTIC_TAG}${ids[i]}` })),
      this.now(),
    );
    let merged = 0;
    let refused = 0;
    const rows: string[] = [];
    const refusedKeys = new Set<string>();
    outcomes.forEach((o, i) => {
      if (o.status === 'same') return;
      if (o.status === 'merged') merged++;
      else {
        refused++;
        refusedKeys.add(this.pairKey(links[i]!.a, links[i]!.b));
      }
      rows.push(
        this.pairRow(
          ids[i]!,
          links[i]!,
          o.status === 'merged' ? 'merged' : 'refused',
          o.status === 'refused' ? o.reason : null,
          o.status === 'merged' ? o.mergeId : null,
        ),
      );
    });
    const pending = await this.pendingPairs();
    const review = (await this.matcher.score(model, this.settings.review)).filter((p) => {
      const a = this.identity.currentProfile(p.a);
      const b = this.identity.currentProfile(p.b);
      if (a === undefined || b === undefined || a === b || isRejected(p.a, p.b)) return false;
      const key = this.pairKey(p.a, p.b);
      if (pending.has(key) || refusedKeys.has(key)) return false;
      pending.add(key);
      return true;
    });
    for (const p of review) rows.push(this.pairRow(randomUUID(), p, 'review', null, null));
    if (rows.length > 0) {
      // Staged, then stored with each pair's waterfall, built in DuckDB from the loaded records.
      await this.conn.run('DELETE FROM temp._profile_match_new');
      for (let i = 0; i < rows.length; i += 1000)
        await this.conn.run(
          `INSERT INTO temp._profile_match_new VALUES ${rows.slice(i, i + 1000).join(', ')}`,
        );
      await this.conn.run(
        `INSERT INTO identity_match_pairs
         SELECT n.pair_id, n.a, n.b, n.probability, n.weight, n.status, n.reason, n.merge_id, now(),
                CASE WHEN n.status = 'review' THEN NULL ELSE now() END, e.evidence
         FROM temp._profile_match_new n
         LEFT JOIN (${this.matcher.evidenceSelect(model, '(SELECT DISTINCT a, b FROM temp._profile_match_new)')}) e
           ON e.a = n.a AND e.b = n.b`,
      );
      await this.conn.run('DELETE FROM temp._profile_match_new');
    }
    return { merged, refused, review: review.length };
  }

  private pairRow(
    id: string,
    p: ScoredPair,
    status: PairStatus,
    reason: string | null,
    mergeId: string | null,
  ): string {
    const [a, b] = p.a < p.b ? [p.a, p.b] : [p.b, p.a];
    const num = (x: number) =>
      Number.isFinite(x) ? String(x) : x > 0 ? "'Infinity'::DOUBLE" : "'-Infinity'::DOUBLE";
    return `(${sqlString(id)}, ${sqlString(a)}, ${sqlString(b)}, ${num(p.probability)}, ${num(p.weight)}, ${sqlString(status)}, ${reason === null ? 'NULL' : sqlString(reason)}, ${mergeId === null ? 'NULL' : sqlString(mergeId)})`;
  }

  /** The two profiles a pair names now (after later merges), as one key. */
  private pairKey(a: string, b: string): string {
    const x = this.identity.currentProfile(a) ?? a;
    const y = this.identity.currentProfile(b) ?? b;
    return x < y ? `${x}\u0000${y}` : `${y}\u0000${x}`;
  }

  private async keysOf(status: PairStatus): Promise<Set<string>> {
    const rows = (
      await this.conn.runAndReadAll(
        'SELECT profile_a, profile_b FROM identity_match_pairs WHERE status = $1',
        [status],
      )
    ).getRows();
    return new Set(rows.map(([a, b]) => this.pairKey(String(a), String(b))));
  }

  private rejectedPairs(): Promise<Set<string>> {
    return this.keysOf('rejected');
  }

  private pendingPairs(): Promise<Set<string>> {
    return this.keysOf('review');
  }

  /** Pairs with this status (default: under review), strongest first, with their waterfall. */
  list(options: { status?: PairStatus; limit?: number; evidence?: boolean } = {}): Promise<MatchPair[]> {
    const limit = Math.min(Math.max(Math.trunc(options.limit ?? 50), 1), 1000);
    return this.serial(() =>
      this.pairsWhere(
        `status = $1 ORDER BY weight DESC, pair_id LIMIT ${limit}`,
        [options.status ?? 'review'],
        options.evidence !== false,
      ),
    );
  }

  /** The pairs with these ids (those that exist), with the evidence stored when they were found. */
  pairs(pairIds: readonly string[]): Promise<MatchPair[]> {
    if (pairIds.length === 0) return Promise.resolve([]);
    return this.serial(() =>
      this.pairsWhere(
        'pair_id IN (SELECT unnest($1::VARCHAR[])) ORDER BY created_at, pair_id',
        [listValue([...pairIds])],
        true,
      ),
    );
  }

  private async pairsWhere(where: string, params: DuckDBValue[], evidence: boolean): Promise<MatchPair[]> {
    const rows = (
      await this.conn.runAndReadAll(
        `SELECT pair_id, profile_a, profile_b, probability, weight, status, reason, merge_id,
                strftime(created_at AT TIME ZONE 'UTC', '%Y-%m-%dT%H:%M:%S.%gZ'),
                strftime(decided_at AT TIME ZONE 'UTC', '%Y-%m-%dT%H:%M:%S.%gZ'), evidence
         FROM identity_match_pairs WHERE ${where}`,
        params,
      )
    ).getRows();
    return rows.map((row) => {
      const pair = pairOf(row);
      const text = row[10];
      if (evidence && text !== null && text !== undefined)
        pair.evidence = JSON.parse(String(text)) as PairExplanation;
      return pair;
    });
  }

  /**
   * Accepts (merges, rule `probabilistic`) or rejects a pair under review; the decision is
   * kept: a rejected pair is never proposed or merged by matching again.
   */
  decide(pairId: string, decision: 'accept' | 'reject'): Promise<MatchPair> {
    return this.serial(async () => {
      const rows = (
        await this.conn.runAndReadAll(
          `SELECT pair_id, profile_a, profile_b, probability, weight, status, reason, merge_id,
                  strftime(created_at AT TIME ZONE 'UTC', '%Y-%m-%dT%H:%M:%S.%gZ'), NULL
           FROM identity_match_pairs WHERE pair_id = $1`,
          [pairId],
        )
      ).getRows();
      if (rows.length === 0) throw new MatchPairError('not_found', `no match pair ${pairId}`);
      const pair = pairOf(rows[0]!);
      if (pair.status !== 'review')
        throw new MatchPairError('not_in_review', `pair ${pairId} is ${pair.status}, not under review`);
      let status: PairStatus = 'rejected';
      let reason: string | null = null;
      let mergeId: string | null = null;
      if (decision === 'accept') {
        const [o] = await this.identity.mergeMatched(
          [{ a: pair.profileA, b: pair.profileB, tag: `${PROBABILISTIC_TAG}${pairId}` }],
          this.now(),
        );
        if (o!.status === 'refused') {
          status = 'refused';
          reason = o!.reason;
        } else {
          status = 'accepted';
          mergeId = o!.status === 'merged' ? o!.mergeId : null;
        }
      }
      await this.conn.run(
        'UPDATE identity_match_pairs SET status = $1, reason = $2, merge_id = $3, decided_at = now() WHERE pair_id = $4',
        [status, reason, mergeId, pairId],
      );
      return { ...pair, status, reason, mergeId, decidedAt: new Date(this.now()).toISOString() };
    });
  }

  /** The waterfall of two profiles (ids), with the last model; undefined without one. */
  explainProfiles(a: string, b: string): Promise<PairExplanation | undefined> {
    return this.serial(async () => {
      if (!this.model) return undefined;
      const x = this.identity.currentProfile(a);
      const y = this.identity.currentProfile(b);
      if (x === undefined || y === undefined) return undefined;
      await this.ensureLoaded();
      return this.matcher.explain(this.model, x, y);
    });
  }

  /** The records are read again when older than a few seconds (explain, list). */
  private async ensureLoaded(): Promise<void> {
    if (this.now() - this.loadedAt < 5_000 && this.loadedAt > 0) return;
    await this.matcher.load(this.recordsSql());
    this.loadedAt = this.now();
  }

  async close(): Promise<void> {
    await this.queue;
    await this.matcher.drop().catch(() => undefined);
    this.conn.closeSync();
  }
}

function pairOf(row: unknown[]): MatchPair {
  const [pairId, a, b, probability, weight, status, reason, mergeId, createdAt, decidedAt] = row;
  return {
    pairId: String(pairId),
    profileA: String(a),
    profileB: String(b),
    probability: Number(probability),
    weight: Number(weight),
    status: String(status) as PairStatus,
    reason: reason === null ? null : String(reason),
    mergeId: mergeId === null ? null : String(mergeId),
    createdAt: String(createdAt),
    decidedAt: decidedAt === null || decidedAt === undefined ? null : String(decidedAt),
  };
}

/**
 * When matching runs by itself: profiles changed by resolution are matched incrementally a
 * little later (collected over `delayMs`, one run at a time), and a full run every
 * `everyMs` when a schedule is set. Errors go to `onError`; the next round tries again.
 */
export class MatchScheduler {
  private changed = new Set<string>();
  private timer: NodeJS.Timeout | undefined;
  private readonly interval: NodeJS.Timeout | undefined;
  private stopped = false;
  private running: Promise<unknown> = Promise.resolve();

  constructor(
    private readonly matching: Pick<ProfileMatching, 'run' | 'matchProfiles'>,
    private readonly options: {
      delayMs?: number;
      everyMs?: number;
      incremental: boolean;
      onError: (err: unknown) => void;
    },
  ) {
    if (options.everyMs !== undefined && options.everyMs > 0) {
      this.interval = setInterval(() => this.track(() => this.matching.run()), options.everyMs);
      this.interval.unref();
    }
  }

  /**
   * What an identity commit changed: the profiles whose traits or identifiers it rewrote are
   * matched (an event that only counts towards a profile changes none of its fields).
   */
  noteChanges(changes: Pick<IdentityChanges, 'dirty'>): void {
    const ids: string[] = [];
    for (const [id, bits] of changes.dirty)
      if ((bits & (Dirty.traits | Dirty.identifiers)) !== 0) ids.push(id);
    this.note(ids);
  }

  /** Profiles whose traits or identifiers changed. */
  note(profileIds: Iterable<string>): void {
    if (this.stopped || !this.options.incremental) return;
    for (const id of profileIds) this.changed.add(id);
    if (this.changed.size === 0 || this.timer) return;
    this.timer = setTimeout(() => {
      this.timer = undefined;
      const ids = [...this.changed];
      this.changed = new Set();
      this.track(() => this.matching.matchProfiles(ids));
    }, this.options.delayMs ?? 5_000);
    this.timer.unref();
  }

  /** Runs `round` after the one before has ended: rounds never overlap, and `stop` awaits the last. */
  private track(round: () => Promise<unknown>): void {
    this.running = this.running.then(round).catch((err) => this.options.onError(err));
  }

  async stop(): Promise<void> {
    this.stopped = true;
    if (this.timer) clearTimeout(this.timer);
    if (this.interval) clearInterval(this.interval);
    await this.running;
  }
}
