import { type DuckDBConnection, listValue } from '@duckdb/node-api';
import { quoteIdent, sqlString } from '../../platform/duckdb/duckdb-sql.js';
import { connectedComponents, guardedClusters, type Link } from './clustering.js';
import {
  auxiliarySql,
  blockingKeySql,
  levelSql,
  levelsOf,
  normalizeSql,
  usesTermFrequency,
} from './comparisons.js';
import {
  estimateLambda,
  estimateU,
  expectationMaximisation,
  initialM,
  type LevelProbabilities,
  type Pattern,
} from './em.js';
import type { MatchField, MatchSettings } from './matching-schema.js';

/** One field of a trained model: per level, m, u and the weight log2(m/u). */
export interface FieldModel {
  name: string;
  comparison: MatchField['comparison'];
  termFrequency: boolean;
  levels: { label: string; m: number; u: number; weight: number }[];
}

/** A trained Fellegi–Sunter model (JSON: it is stored and reloaded). */
export interface MatchModel {
  /** Probability that two records drawn at random are one person. */
  prior: number;
  fields: FieldModel[];
  /** What EM saw per blocking rule (fields of the rule are not estimated from its pairs). */
  training: { rule: number; pairs: number; lambda: number; iterations: number; converged: boolean }[];
  records: number;
  candidatePairs: number;
  randomPairs: number;
}

/** A pair above a threshold. Ids are the records' own. */
export interface ScoredPair {
  a: string;
  b: string;
  weight: number;
  probability: number;
}

/** One bar of the waterfall: a field's level, its weight and the term-frequency part. */
export interface FieldEvidence {
  field: string;
  left: string | null;
  right: string | null;
  level: string;
  /** log2(m/u) of the level (0 when a value is missing). */
  weight: number;
  /** log2(u/tf) added for a rare (positive) or common (negative) exact value. */
  termFrequency: number;
}

export interface PairExplanation {
  a: string;
  b: string;
  /** log2 of the prior odds. */
  prior: number;
  fields: FieldEvidence[];
  /** Prior plus every field's weight: log2 of the match odds. */
  weight: number;
  probability: number;
}

export interface MatchResult {
  /** Groups of record ids (groups of one are left out). */
  clusters: string[][];
  /** The links inside the groups and the pairs refused by the chain guard. */
  links: ScoredPair[];
  vetoed: ScoredPair[];
}

const log2 = (x: number) => Math.log(x) / Math.LN2;
export const probabilityOf = (weight: number) => 1 / (1 + 2 ** -weight);
export const weightOf = (probability: number) => log2(probability / (1 - probability));

/** Largest group whose every pair the chain guard compares (a bigger one keeps its links). */
const GUARD_MAX_GROUP = 500;

/**
 * The Fellegi–Sunter matcher over one DuckDB connection's temporary tables (its own: a
 * connection's temporary tables are private). Records come from any SELECT giving `id` and
 * each field's raw value; normalisation, pairs, comparisons and weights run as SQL, only
 * comparison patterns (a few hundred rows) and the pairs above a threshold come back to
 * JavaScript.
 *
 * @example
 * const m = new Matcher(conn, settings);
 * await m.load('SELECT unique_id AS id, first_name, surname, dob, email FROM people');
 * const model = await m.estimate();
 * const { clusters } = await m.match(model, 0.95);
 */
export class Matcher {
  private readonly t: (name: string) => string;
  private loaded = 0;

  constructor(
    private readonly conn: DuckDBConnection,
    readonly settings: MatchSettings,
    private readonly prefix = 'match',
  ) {
    if (!/^[a-z][a-z0-9_]{0,30}$/.test(prefix)) throw new Error(`bad table prefix ${prefix}`);
    this.t = (name) => `temp.${quoteIdent(`_${prefix}_${name}`)}`;
  }

  private get fields(): MatchField[] {
    return this.settings.fields;
  }

  private async rows(sql: string): Promise<unknown[][]> {
    return (await this.conn.runAndReadAll(sql)).getRows() as unknown[][];
  }

  /**
   * (Re)builds the records from `source`: a SELECT with a column `id` and one per field
   * (raw text). Returns how many records.
   */
  async load(source: string): Promise<number> {
    const norm = this.fields.map(
      (f) => `${normalizeSql(f.comparison, `s.${quoteIdent(f.name)}`)} AS ${quoteIdent(f.name)}`,
    );
    await this.conn.run(
      `CREATE OR REPLACE TEMP TABLE ${this.t('raw')} AS
       SELECT CAST(s.id AS VARCHAR) AS id, ${norm.join(', ')} FROM (${source}) s WHERE s.id IS NOT NULL`,
    );
    const tf = this.fields
      .filter(usesTermFrequency)
      .map(
        (f) =>
          `CASE WHEN ${quoteIdent(f.name)} IS NOT NULL THEN count(*) OVER (PARTITION BY ${quoteIdent(f.name)}) / count(${quoteIdent(f.name)}) OVER () END AS ${quoteIdent(`${f.name}__tf`)}`,
      );
    const aux = this.fields.flatMap((f) => auxiliarySql(f, quoteIdent(f.name)));
    await this.conn.run(
      `CREATE OR REPLACE TEMP TABLE ${this.t('rec')} AS
       SELECT (row_number() OVER (ORDER BY id) - 1)::BIGINT AS rid, *${[...tf, ...aux].map((x) => `, ${x}`).join('')}
       FROM (SELECT DISTINCT ON (id) * FROM ${this.t('raw')})`,
    );
    await this.conn.run(`DROP TABLE ${this.t('raw')}`);
    const [[n]] = (await this.rows(`SELECT count(*) FROM ${this.t('rec')}`)) as [[bigint]];
    this.loaded = Number(n);
    return this.loaded;
  }

  /** The SELECT of comparison levels (and exact values' term frequencies) of a table of pairs (l, r rids). */
  private compareSql(pairs: string, extra = ''): string {
    const cols = this.fields.flatMap((f, i) => {
      const g = `${levelSql(f)} AS g${i}`;
      if (!usesTermFrequency(f)) return [g];
      const tf = quoteIdent(`${f.name}__tf`);
      return [
        g,
        `CASE WHEN l.${quoteIdent(f.name)} = r.${quoteIdent(f.name)} THEN greatest(l.${tf}, r.${tf}) END AS t${i}`,
      ];
    });
    return `SELECT p.l, p.r${extra}, ${cols.join(', ')}
      FROM ${pairs} p JOIN ${this.t('rec')} l ON l.rid = p.l JOIN ${this.t('rec')} r ON r.rid = p.r`;
  }

  /**
   * The candidate pairs of the blocking rules (unioned; `mask` says which rules found each),
   * compared. With `only`, just the pairs that involve those record ids (incremental).
   */
  async candidates(only?: readonly string[]): Promise<number> {
    const rules = this.settings.blocking.map((rule, i) => {
      const keys = rule.map((k) => blockingKeySql(k));
      const names = keys.map((_, j) => `k${j}`);
      const on = names.map((k) => `a.${k} = b.${k}`).join(' AND ');
      const restrict = only ? ' AND (a.rid IN (SELECT rid FROM sel) OR b.rid IN (SELECT rid FROM sel))' : '';
      return `SELECT a.rid AS l, b.rid AS r, ${2 ** i} AS bit FROM (
          SELECT k.* FROM (SELECT t.rid, ${keys.map((k, j) => `${k.sql} AS k${j}`).join(', ')} FROM ${this.t('rec')} t) k
          SEMI JOIN (SELECT ${names.join(', ')} FROM (SELECT ${keys.map((k, j) => `${k.sql} AS k${j}`).join(', ')} FROM ${this.t('rec')} t)
                     WHERE ${names.map((k) => `${k} IS NOT NULL`).join(' AND ')}
                     GROUP BY ALL HAVING count(*) <= ${Math.trunc(this.settings.maxBlockSize)}) ok
          USING (${names.join(', ')})
        ) a JOIN (
          SELECT t.rid, ${keys.map((k, j) => `${k.sql} AS k${j}`).join(', ')} FROM ${this.t('rec')} t
        ) b ON ${on} AND a.rid < b.rid${restrict}`;
    });
    const sel = only
      ? `WITH sel AS (SELECT rid FROM ${this.t('rec')} WHERE id IN (SELECT unnest($1::VARCHAR[]))) `
      : '';
    await this.conn.run(
      `CREATE OR REPLACE TEMP TABLE ${this.t('pairs')} AS ${sel}
       SELECT l, r, bit_or(bit)::UINTEGER AS mask FROM (${rules.join(' UNION ALL ')}) GROUP BY l, r`,
      only ? [listValue([...only])] : undefined,
    );
    await this.conn.run(
      `CREATE OR REPLACE TEMP TABLE ${this.t('cmp')} AS ${this.compareSql(this.t('pairs'), ', p.mask')}`,
    );
    const [[n]] = (await this.rows(`SELECT count(*) FROM ${this.t('cmp')}`)) as [[bigint]];
    return Number(n);
  }

  private levelCounts(): number[] {
    return this.fields.map((f) => levelsOf(f).length);
  }

  private async patterns(sql: string, withMask: boolean): Promise<(Pattern & { mask: number })[]> {
    const g = this.fields.map((_, i) => `g${i}`).join(', ');
    const rows = await this.rows(
      `SELECT ${withMask ? 'mask' : '0'}, ${g}, count(*) FROM (${sql}) GROUP BY ALL`,
    );
    return rows.map((row) => ({
      mask: Number(row[0]),
      levels: row.slice(1, -1).map(Number),
      count: Number(row[row.length - 1]),
    }));
  }

  /**
   * Estimates the model without labels: u from `sampleSize` random pairs; m by EM over the
   * pairs of each blocking rule in turn (the rule's own fields are not estimated from its
   * pairs: it made them agree), averaged; the prior from the expected number of matches
   * among all candidate pairs. Call `candidates()` first.
   */
  async estimate(): Promise<MatchModel> {
    const n = this.loaded;
    const counts = this.levelCounts();
    const { sampleSize, seed } = this.settings;
    await this.conn.run(
      `CREATE OR REPLACE TEMP TABLE ${this.t('random')} AS
       SELECT l, r FROM (SELECT (hash(i, ${seed}) % ${Math.max(n, 1)})::BIGINT AS l, (hash(i, ${seed + 1}) % ${Math.max(n, 1)})::BIGINT AS r
                         FROM range(${n < 2 ? 0 : Math.trunc(sampleSize)}) t(i)) WHERE l <> r`,
    );
    const randomPatterns = n < 2 ? [] : await this.patterns(this.compareSql(this.t('random')), false);
    const randomPairs = randomPatterns.reduce((s, p) => s + p.count, 0);
    const u = estimateU(randomPatterns, counts);
    const candidate = await this.patterns(`SELECT * FROM ${this.t('cmp')}`, true);
    const candidatePairs = candidate.reduce((s, p) => s + p.count, 0);

    const sums: number[][] = counts.map((c) => new Array<number>(c).fill(0));
    const runs = new Array<number>(counts.length).fill(0);
    const training: MatchModel['training'] = [];
    this.settings.blocking.forEach((rule, i) => {
      const used = new Set(rule.map((k) => (typeof k === 'string' ? k : k.field)));
      const include = this.fields.map((f) => !used.has(f.name));
      const own = candidate.filter((p) => (p.mask & (2 ** i)) !== 0);
      const pairs = own.reduce((s, p) => s + p.count, 0);
      if (pairs === 0 || !include.some(Boolean)) return;
      const em = expectationMaximisation(own, u, { include });
      training.push({
        rule: i,
        pairs,
        lambda: em.lambda,
        iterations: em.iterations,
        converged: em.converged,
      });
      include.forEach((inc, f) => {
        if (!inc) return;
        runs[f]!++;
        em.m[f]!.forEach((v, l) => {
          sums[f]![l]! += v;
        });
      });
    });
    const start = initialM(counts);
    const m: LevelProbabilities = counts.map((_, f) =>
      runs[f]! > 0 ? sums[f]!.map((s) => s / runs[f]!) : start[f]!,
    );
    const lambda = estimateLambda(candidate, m, u);
    const totalPairs = (n * (n - 1)) / 2;
    const prior =
      totalPairs > 0 ? Math.min(Math.max((lambda * candidatePairs) / totalPairs, 1e-12), 0.5) : 0.5;
    const fields: FieldModel[] = this.fields.map((f, i) => ({
      name: f.name,
      comparison: f.comparison,
      termFrequency: usesTermFrequency(f),
      levels: levelsOf(f).map((lv, l) => ({
        label: lv.label,
        m: l === 0 ? 1 : m[i]![l]!,
        u: l === 0 ? 1 : u[i]![l]!,
        weight: l === 0 ? 0 : log2(Math.max(m[i]![l]!, 1e-6) / Math.max(u[i]![l]!, 1e-6)),
      })),
    }));
    return { prior, fields, training, records: n, candidatePairs, randomPairs };
  }

  /** The match weight of a compared pair as SQL (prior plus each field's level weight and term-frequency part). */
  private weightParts(model: MatchModel): string[] {
    return model.fields.map((f, i) => {
      const cases = f.levels.map((lv, l) => `WHEN ${l} THEN ${lv.weight}`).join(' ');
      const level = `(CASE g${i} ${cases} ELSE 0 END)`;
      if (!f.termFrequency) return level;
      const uExact = f.levels[1]!.u;
      // tf is the share of records with the value; floored so a value held once stays finite.
      return `(${level} + CASE WHEN g${i} = 1 AND t${i} IS NOT NULL THEN log2(${uExact} / greatest(t${i}, ${1 / Math.max(model.records, 1)})) ELSE 0 END)`;
    });
  }

  private weightSql(model: MatchModel): string {
    return `(${log2(model.prior / (1 - model.prior))} + ${this.weightParts(model).join(' + ')})`;
  }

  private async scoreAll(model: MatchModel): Promise<void> {
    await this.conn.run(
      `CREATE OR REPLACE TEMP TABLE ${this.t('scored')} AS SELECT l, r, ${this.weightSql(model)} AS weight FROM ${this.t('cmp')}`,
    );
  }

  /** Scores the candidate pairs; returns those with a match probability of at least `min`. */
  async score(model: MatchModel, min: number): Promise<ScoredPair[]> {
    await this.scoreAll(model);
    const rows = await this.rows(
      `SELECT a.id, b.id, s.weight FROM ${this.t('scored')} s JOIN ${this.t('rec')} a ON a.rid = s.l JOIN ${this.t('rec')} b ON b.rid = s.r
       WHERE s.weight >= ${weightOf(min)} ORDER BY s.weight DESC, a.id, b.id`,
    );
    return rows.map(([a, b, w]) => ({
      a: String(a),
      b: String(b),
      weight: Number(w),
      probability: probabilityOf(Number(w)),
    }));
  }

  /**
   * Scores the candidate pairs and groups the records whose links reach `threshold`, with
   * the chain guard: in a group of three or more, every pair is compared, and two parts are
   * not joined when a pair between them is below the `guard` probability.
   */
  async match(model: MatchModel, threshold: number): Promise<MatchResult> {
    await this.scoreAll(model);
    const rows = await this.rows(
      `SELECT l, r, weight FROM ${this.t('scored')} WHERE weight >= ${weightOf(threshold)}`,
    );
    const links: Link[] = rows.map(([l, r, w]) => ({ a: Number(l), b: Number(r), weight: Number(w) }));
    const n = this.loaded;
    const roots = connectedComponents(n, links);
    const groupSize = new Map<number, number>();
    for (const root of roots) groupSize.set(root, (groupSize.get(root) ?? 0) + 1);
    const guarded: [number, number][] = [];
    for (let i = 0; i < n; i++) {
      const size = groupSize.get(roots[i]!)!;
      if (size >= 3 && size <= GUARD_MAX_GROUP) guarded.push([i, roots[i]!]);
    }
    let vetoes: [number, number][] = [];
    if (guarded.length > 0) {
      await this.conn.run(`CREATE OR REPLACE TEMP TABLE ${this.t('groups')} (rid BIGINT, grp BIGINT)`);
      const app = await this.conn.createAppender(`_${this.prefix}_groups`, null, 'temp');
      for (const [rid, grp] of guarded) {
        app.appendBigInt(BigInt(rid));
        app.appendBigInt(BigInt(grp));
        app.endRow();
      }
      app.flushSync();
      app.closeSync();
      await this.conn.run(
        `CREATE OR REPLACE TEMP TABLE ${this.t('inner')} AS
         SELECT a.rid AS l, b.rid AS r FROM ${this.t('groups')} a JOIN ${this.t('groups')} b ON a.grp = b.grp AND a.rid < b.rid`,
      );
      const veto = await this.rows(
        `SELECT l, r FROM (SELECT l, r, ${this.weightSql(model)} AS weight FROM (${this.compareSql(this.t('inner'))}))
         WHERE weight < ${weightOf(this.settings.guard)}`,
      );
      vetoes = veto.map(([l, r]) => [Number(l), Number(r)]);
    }
    const { roots: final, vetoed } = guardedClusters(n, links, vetoes);
    const ids = await this.ids();
    const byRoot = new Map<number, string[]>();
    for (let i = 0; i < n; i++) {
      const list = byRoot.get(final[i]!);
      if (list) list.push(ids[i]!);
      else byRoot.set(final[i]!, [ids[i]!]);
    }
    const clusters = [...byRoot.values()].filter((c) => c.length > 1);
    const pair = (l: Link): ScoredPair => ({
      a: ids[l.a]!,
      b: ids[l.b]!,
      weight: l.weight,
      probability: probabilityOf(l.weight),
    });
    return {
      clusters,
      links: links.filter((l) => final[l.a] === final[l.b]).map(pair),
      vetoed: vetoed.map(pair),
    };
  }

  /** Record ids by rid. */
  private async ids(): Promise<string[]> {
    const rows = await this.rows(`SELECT id FROM ${this.t('rec')} ORDER BY rid`);
    return rows.map((r) => String(r[0]));
  }

  /** The waterfall of one pair of record ids: each field's level, weight and term-frequency part. */
  async explain(model: MatchModel, a: string, b: string): Promise<PairExplanation | undefined> {
    const rows = (
      await this.conn.runAndReadAll(
        this.evidenceSelect(model, '(SELECT $1::VARCHAR AS a, $2::VARCHAR AS b)'),
        [a, b],
      )
    ).getRows();
    return rows.length === 0 ? undefined : (JSON.parse(String(rows[0]![2])) as PairExplanation);
  }

  /**
   * SQL: for a relation of record-id pairs (`a`, `b`), the waterfall of each as JSON text (a
   * `PairExplanation`, column `evidence`), all in DuckDB (a run stores it for every pair it
   * merges or lists). Pairs naming a record not loaded are left out.
   */
  evidenceSelect(model: MatchModel, pairs: string): string {
    const parts = this.weightParts(model);
    const prior = log2(model.prior / (1 - model.prior));
    const values = this.fields
      .map(
        (f, i) =>
          `CAST(l.${quoteIdent(f.name)} AS VARCHAR) AS v${i}l, CAST(r.${quoteIdent(f.name)} AS VARCHAR) AS v${i}r`,
      )
      .join(', ');
    const fields = model.fields.map((f, i) => {
      const level = `CASE g${i} ${f.levels.map((lv, l) => `WHEN ${l} THEN ${sqlString(lv.label)}`).join(' ')} END`;
      const base = `(CASE g${i} ${f.levels.map((lv, l) => `WHEN ${l} THEN ${lv.weight}`).join(' ')} ELSE 0 END)`;
      return `json_object('field', ${sqlString(f.name)}, 'left', v${i}l, 'right', v${i}r, 'level', ${level}, 'weight', ${base}, 'termFrequency', ${parts[i]} - ${base})`;
    });
    const total = `(${prior} + ${parts.join(' + ')})`;
    const located = `(SELECT x.rid AS l, y.rid AS r, q.a, q.b FROM ${pairs} q
      JOIN ${this.t('rec')} x ON x.id = q.a JOIN ${this.t('rec')} y ON y.id = q.b)`;
    return `SELECT a, b, CAST(json_object('a', a, 'b', b, 'prior', ${prior}, 'fields', json_array(${fields.join(', ')}),
        'weight', ${total}, 'probability', 1 / (1 + pow(2, -${total}))) AS VARCHAR) AS evidence
      FROM (${this.compareSql(located, `, p.a, p.b, ${values}`)})`;
  }

  /** Drops the scratch tables. */
  async drop(): Promise<void> {
    for (const name of ['rec', 'pairs', 'cmp', 'random', 'scored', 'groups', 'inner'])
      await this.conn.run(`DROP TABLE IF EXISTS ${this.t(name)}`);
  }
}
