/**
 * Probabilistic matching benchmark. For each data set it runs, in one process:
 *  - the deterministic rules as the baseline (same email, or same first name + surname +
 *    date of birth, after trimming and lower-casing; an in-memory union-find), and
 *  - the Fellegi–Sunter matcher (src/identity/matching/) in a scratch DuckDB: parameters
 *    estimated without the labels (u from random pairs, m by EM), pairs scored, clustered
 *    with the chain guard at each `--threshold` match probability,
 * and prints pairwise precision, recall and F1, B-cubed F1 and the time of each against the
 * labels (which only score). Data: ../shared/data/er (febrl3, fake_1000) and a synthetic set
 * of `--synthetic` records drawn reproducibly (`--seed`) from their values.
 *
 *   npm run bench:matching -- [--data DIR] [--threshold P[,P...]] [--synthetic N] [--seed S] [--runs N] [--verbose] [--no-store]
 *
 * Unless `--no-store`, the synthetic records also go through the identity store end to end:
 * one profile per record (its fields as traits, an anonymous id) in the embedded DuckDB identity
 * store, `ProfileMatching.run()` (records read from the profile tables, trained, scored,
 * clustered, merged through the identity engine at the default autoMerge and committed), scored
 * by the profile each record ends in (the anonymous id limit raised to 10: a person has up to
 * 6 records, each with its own).
 *
 * Thresholds default to 0.9 and 0.99 (the default `autoMerge`); each is a separate run.
 */
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { type DuckDBConnection, DuckDBInstance } from '@duckdb/node-api';
import { IdentityConfig } from '../src/config/identity-schema.js';
import { DuckDBIdentityStore } from '../src/identity/duckdb/duckdb-identity-store.js';
import { compileRules } from '../src/identity/identifiers.js';
import { IdentityStage } from '../src/identity/identity-stage.js';
import { UnionFind } from '../src/identity/matching/clustering.js';
import { Matcher, type MatchModel } from '../src/identity/matching/matcher.js';
import { MatchingConfig, MatchSettings } from '../src/identity/matching/matching-schema.js';
import { groupsToMap, type Scores, scoreClusters } from '../src/identity/matching/metrics.js';
import { ProfileMatching } from '../src/identity/matching/profile-matching.js';
import { DuckDBStore } from '../src/store/duckdb/duckdb-store.js';
import { prng } from './lib/events.js';
import { markdownTable } from './lib/report.js';

const { values: args } = parseArgs({
  options: {
    data: { type: 'string' },
    threshold: { type: 'string' },
    synthetic: { type: 'string', default: '100000' },
    seed: { type: 'string', default: '42' },
    runs: { type: 'string', default: '1' },
    verbose: { type: 'boolean', default: false },
    store: { type: 'boolean', default: true },
  },
});

interface DataSet {
  name: string;
  /** SELECT id, truth, and the raw fields. */
  source: string;
  settings: MatchSettings;
  /** Columns of the deterministic rules: email (or null), first name, surname, dob. */
  rules: { email: string | null; first: string; last: string; dob: string };
}

/** The data: --data, else ../shared/data/er from the repository (or from its worktree folder). */
const dataDir =
  args.data ??
  ['../shared/data/er', '../../shared/data/er'].find((d) => existsSync(join(d, 'fake_1000.csv'))) ??
  '../shared/data/er';
const csv = (file: string) =>
  `read_csv(${`'${join(dataDir, file).replace(/'/g, "''")}'`}, all_varchar = true, normalize_names = true)`;

const FAKE: DataSet = {
  name: 'fake_1000',
  source: `SELECT unique_id AS id, _cluster AS truth, first_name, surname, dob, city, email FROM ${csv('fake_1000.csv')}`,
  settings: MatchSettings.parse({
    fields: [
      { name: 'first_name', comparison: 'name', swapWith: 'surname' },
      { name: 'surname', comparison: 'name', swapWith: 'first_name' },
      { name: 'dob', comparison: 'date' },
      { name: 'city', comparison: 'text' },
      { name: 'email', comparison: 'email' },
    ],
    blocking: [
      ['dob'],
      ['email'],
      ['first_name', 'surname'],
      [
        { field: 'surname', transform: 'prefix', length: 2 },
        { field: 'dob', transform: 'year' },
      ],
      [{ field: 'first_name', transform: 'prefix', length: 2 }, 'city'],
      [{ field: 'email', transform: 'local' }],
      ['surname', 'city'],
      ['first_name', { field: 'dob', transform: 'year' }],
      [{ field: 'dob', transform: 'year' }, 'city'],
      [
        { field: 'first_name', transform: 'prefix', length: 1 },
        { field: 'surname', transform: 'prefix', length: 1 },
        { field: 'dob', transform: 'year' },
      ],
    ],
  }),
  rules: { email: 'email', first: 'first_name', last: 'surname', dob: 'dob' },
};

const FEBRL: DataSet = {
  name: 'febrl3',
  source: `SELECT rec_id AS id, regexp_extract(rec_id, 'rec-([0-9]+)', 1) AS truth, given_name, surname, street_number,
           address_1, address_2, suburb, postcode, state, date_of_birth, soc_sec_id FROM ${csv('febrl3.csv')}`,
  settings: MatchSettings.parse({
    fields: [
      { name: 'given_name', comparison: 'name', swapWith: 'surname' },
      { name: 'surname', comparison: 'name', swapWith: 'given_name' },
      { name: 'street_number', comparison: 'code' },
      { name: 'address_1', comparison: 'text' },
      { name: 'address_2', comparison: 'text' },
      { name: 'suburb', comparison: 'text' },
      { name: 'postcode', comparison: 'code' },
      { name: 'state', comparison: 'exact' },
      { name: 'date_of_birth', comparison: 'date' },
      { name: 'soc_sec_id', comparison: 'code' },
    ],
    blocking: [
      ['date_of_birth'],
      ['soc_sec_id'],
      ['given_name', 'surname'],
      ['surname', 'postcode'],
      ['given_name', 'suburb'],
      ['postcode', 'street_number'],
    ],
  }),
  rules: { email: null, first: 'given_name', last: 'surname', dob: 'date_of_birth' },
};

const SYNTHETIC_SETTINGS = MatchSettings.parse({ ...FAKE.settings });

/**
 * Synthetic people drawn from the values of both data sets: each person has 1–6 records
 * (mean about 2.5); a record may drop a field, take a typo, a nickname-like prefix, a
 * transposed day and month or another email. Reproducible from the seed.
 */
async function synthesize(conn: DuckDBConnection, records: number, seed: number): Promise<string> {
  // Sorted: DISTINCT and UNION return rows in no fixed order, and the draws must be reproducible.
  const values = async (sql: string) =>
    ((await conn.runAndReadAll(`SELECT * FROM (${sql}) ORDER BY 1`)).getRows() as unknown[][])
      .map((r) => String(r[0]).trim())
      .filter((v) => v !== '');
  const firsts = await values(
    `SELECT DISTINCT lower(trim(first_name)) FROM ${csv('fake_1000.csv')} WHERE first_name IS NOT NULL
     UNION SELECT DISTINCT lower(trim(given_name)) FROM ${csv('febrl3.csv')} WHERE given_name IS NOT NULL`,
  );
  const lasts = await values(
    `SELECT DISTINCT lower(trim(surname)) FROM ${csv('fake_1000.csv')} WHERE surname IS NOT NULL
     UNION SELECT DISTINCT lower(trim(surname)) FROM ${csv('febrl3.csv')} WHERE surname IS NOT NULL`,
  );
  const cities = await values(
    `SELECT DISTINCT lower(trim(city)) FROM ${csv('fake_1000.csv')} WHERE city IS NOT NULL
     UNION SELECT DISTINCT lower(trim(suburb)) FROM ${csv('febrl3.csv')} WHERE suburb IS NOT NULL`,
  );
  const domains = [
    'gmail.com',
    'yahoo.com',
    'hotmail.com',
    'outlook.com',
    'smith.net',
    'mail.com',
    'example.org',
  ];
  const rnd = prng(seed);
  const pick = <T>(xs: readonly T[]) => xs[Math.floor(rnd() * xs.length)]!;
  // Zipf-like picks: common names are common, as in the data.
  const skewed = <T>(xs: readonly T[]) => xs[Math.floor(xs.length * rnd() ** 2)]!;
  const letters = 'abcdefghijklmnopqrstuvwxyz';
  const typo = (s: string) => {
    if (s.length < 2) return s;
    const i = Math.floor(rnd() * s.length);
    const k = rnd();
    if (k < 0.33) return s.slice(0, i) + s.slice(i + 1);
    if (k < 0.66) return s.slice(0, i) + pick([...letters]) + s.slice(i + 1);
    return i + 1 < s.length ? s.slice(0, i) + s[i + 1] + s[i] + s.slice(i + 2) : s;
  };
  const lines: string[] = [];
  let person = 0;
  while (lines.length < records) {
    person++;
    const first = skewed(firsts);
    const last = skewed(lasts);
    const birth = new Date(
      Date.UTC(1930 + Math.floor(rnd() * 75), Math.floor(rnd() * 12), 1 + Math.floor(rnd() * 28)),
    );
    const dob = birth.toISOString().slice(0, 10);
    const city = skewed(cities);
    const email = `${first}${rnd() < 0.5 ? '.' : ''}${last}${Math.floor(rnd() * 100)}@${pick(domains)}`;
    const copies = 1 + Math.floor(rnd() ** 1.5 * 6);
    for (let c = 0; c < copies && lines.length < records; c++) {
      const r = () => rnd();
      let f = first;
      if (c > 0 && r() < 0.2) f = typo(f);
      else if (c > 0 && r() < 0.08) f = f.slice(0, Math.max(3, Math.floor(f.length / 2)));
      let l = last;
      if (c > 0 && r() < 0.2) l = typo(l);
      let d = dob;
      const dateNoise = c > 0 ? r() : 1;
      if (dateNoise < 0.1) d = `${dob.slice(0, 5)}${dob.slice(8, 10)}-${dob.slice(5, 7)}`;
      else if (dateNoise < 0.2) d = typo(dob);
      let e = email;
      if (c > 0 && r() < 0.15) e = typo(email);
      const cell = (v: string, pMissing: number) => (r() < pMissing ? '' : `"${v.replace(/"/g, '""')}"`);
      lines.push(
        [
          lines.length,
          person,
          cell(f, 0.03),
          cell(l, 0.03),
          cell(d, 0.08),
          cell(city, 0.25),
          cell(e, 0.25),
        ].join(','),
      );
    }
  }
  await conn.run(
    'CREATE OR REPLACE TABLE synthetic (id VARCHAR, truth VARCHAR, first_name VARCHAR, surname VARCHAR, dob VARCHAR, city VARCHAR, email VARCHAR)',
  );
  const app = await conn.createAppender('synthetic');
  for (const line of lines) {
    const cells = parseLine(line);
    for (const v of cells) {
      if (v === '') app.appendNull();
      else app.appendVarchar(v);
    }
    app.endRow();
  }
  app.flushSync();
  app.closeSync();
  return 'SELECT * FROM synthetic';
}

function parseLine(line: string): string[] {
  const out: string[] = [];
  let i = 0;
  while (i <= line.length) {
    if (line[i] === '"') {
      let v = '';
      i++;
      for (;;) {
        if (line[i] === '"' && line[i + 1] === '"') {
          v += '"';
          i += 2;
        } else if (line[i] === '"') {
          i++;
          break;
        } else v += line[i++];
      }
      out.push(v);
      i++;
    } else {
      const j = line.indexOf(',', i);
      const end = j === -1 ? line.length : j;
      out.push(line.slice(i, end));
      i = end + 1;
    }
  }
  return out;
}

/** The deterministic rules as clusters: an in-memory union-find over email and name + dob keys. */
async function deterministic(
  conn: DuckDBConnection,
  ds: DataSet,
  source: string,
): Promise<Map<string, string>> {
  const { email, first, last, dob } = ds.rules;
  const norm = (c: string) => `nullif(lower(trim(${c})), '')`;
  const rows = (
    await conn.runAndReadAll(
      `SELECT id, ${email ? norm(email) : 'NULL'}, ${norm(first)}, ${norm(last)}, ${norm(dob)} FROM (${source})`,
    )
  ).getRows() as (string | null)[][];
  const uf = new UnionFind(rows.length);
  const seen = new Map<string, number>();
  rows.forEach(([, e, f, l, d], i) => {
    const keys: string[] = [];
    if (e) keys.push(`e:${e}`);
    if (f && l && d) keys.push(`n:${f}\u0000${l}\u0000${d}`);
    for (const k of keys) {
      const j = seen.get(k);
      if (j === undefined) seen.set(k, i);
      else uf.union(i, j);
    }
  });
  return new Map(rows.map(([id], i) => [String(id), String(uf.find(i))]));
}

interface Row {
  data: string;
  method: string;
  records: number;
  scores: Scores;
  ms: number;
}

async function truthOf(conn: DuckDBConnection, source: string): Promise<Map<string, string>> {
  const rows = (await conn.runAndReadAll(`SELECT id, truth FROM (${source})`)).getRows();
  return new Map(rows.map(([id, t]) => [String(id), String(t)]));
}

async function runProbabilistic(
  conn: DuckDBConnection,
  ds: DataSet,
  source: string,
  threshold: number,
): Promise<{ predicted: Map<string, string>; ms: number; model: MatchModel; records: number }> {
  const t0 = performance.now();
  const phases: string[] = [];
  let mark = t0;
  const lap = (name: string) => {
    const now = performance.now();
    phases.push(`${name} ${((now - mark) / 1000).toFixed(2)} s`);
    mark = now;
  };
  const matcher = new Matcher(conn, ds.settings, 'bench');
  const records = await matcher.load(source);
  lap('load');
  const pairs = await matcher.candidates();
  lap(`candidates (${pairs.toLocaleString('en')} pairs)`);
  const model = await matcher.estimate();
  lap('estimate');
  const result = await matcher.match(model, threshold);
  lap('match');
  const ms = performance.now() - t0;
  if (args.verbose) console.log(`${ds.name} p >= ${threshold}: ${phases.join(', ')}`);
  await matcher.drop();
  return { predicted: groupsToMap(result.clusters), ms, model, records };
}

/**
 * The synthetic records as profiles of the embedded identity store (one per record: its
 * traits, and its email as an identifier), then one full `ProfileMatching.run()`: read from the
 * profile tables, trained, scored, clustered, merged through the identity stage and committed.
 */
async function storeRun(
  source: string,
  truthConn: DuckDBConnection,
  settings: MatchSettings,
): Promise<{ scores: Scores; ms: number; records: number; merged: number; refused: number }> {
  const instance = await DuckDBInstance.create(':memory:', { threads: '2' });
  const c = await instance.connect();
  const warehouse = await DuckDBStore.open(instance);
  const store = await DuckDBIdentityStore.open(instance);
  const rows = (
    await truthConn.runAndReadAll(`SELECT id, first_name, surname, dob, city, email FROM (${source})`)
  ).getRows();
  await c.run(
    'CREATE TEMP TABLE recs (id VARCHAR, first_name VARCHAR, surname VARCHAR, dob VARCHAR, city VARCHAR, email VARCHAR)',
  );
  const app = await c.createAppender('recs', null, 'temp');
  for (const r of rows) {
    for (const v of r) {
      if (v === null) app.appendNull();
      else app.appendVarchar(String(v));
    }
    app.endRow();
  }
  app.flushSync();
  app.closeSync();
  await c.run(
    `INSERT INTO profiles SELECT 'p' || id, TIMESTAMPTZ '2026-01-01', TIMESTAMPTZ '2026-01-01', 1, CAST(id AS BIGINT), now() FROM recs`,
  );
  await c.run(
    `INSERT INTO profile_identifiers SELECT 'p' || id, 'anonymous_id', 'a' || id, TIMESTAMPTZ '2026-01-01', 'bench', CAST(id AS BIGINT) FROM recs`,
  );
  // The email as a trait: as an identifier, records sharing one would already be one profile.
  const traitOf: Record<string, string> = {
    first_name: 'firstName',
    surname: 'lastName',
    dob: 'birthday',
    city: 'city',
    email: 'email',
  };
  for (const [col, trait] of Object.entries(traitOf))
    await c.run(
      `INSERT INTO profile_traits SELECT 'p' || id, '${trait}', to_json(${col}), TIMESTAMPTZ '2026-01-01', 'bench', CAST(id AS BIGINT) FROM recs WHERE ${col} IS NOT NULL`,
    );
  // A person here has up to 6 records, each with its own anonymous id: over the default limit
  // of 5 per type, which matching never overrides.
  const rules = compileRules(IdentityConfig.parse({ identifiers: { anonymous_id: { limit: 10 } } }));
  const stage = await IdentityStage.open(store, rules);
  const fields = settings.fields.map((f) => ({ ...f, traits: [traitOf[f.name]!] }));
  const matching = await ProfileMatching.open(
    instance,
    stage,
    MatchingConfig.parse({ enabled: true, fields, blocking: settings.blocking }),
  );
  const t0 = performance.now();
  const summary = await matching.run();
  const ms = performance.now() - t0;
  if (args.verbose) {
    const m = matching.currentModel()!;
    console.log(
      `identity store run: ${summary.candidatePairs} candidate pairs, prior ${m.prior.toExponential(3)}; ${summary.merged} merged, ${summary.refused} refused, ${summary.review} to review`,
    );
  }
  const truth = await truthOf(truthConn, source);
  const predicted = new Map<string, string>();
  for (const id of truth.keys()) predicted.set(id, stage.currentProfile(`p${id}`) ?? `p${id}`);
  await matching.close();
  await stage.stop();
  await store.close();
  await warehouse.close();
  c.closeSync();
  instance.closeSync();
  return {
    scores: scoreClusters(predicted, truth),
    ms,
    records: summary.records,
    merged: summary.merged,
    refused: summary.refused,
  };
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
const f3 = (x: number) => x.toFixed(3);

async function main(): Promise<void> {
  if (!existsSync(join(dataDir, 'fake_1000.csv'))) throw new Error(`no data in ${dataDir} (--data DIR)`);
  const instance = await DuckDBInstance.create(':memory:', { threads: '2' });
  const conn = await instance.connect();
  const runs = Math.max(1, Number(args.runs));
  const thresholds = (args.threshold ?? '0.9,0.99').split(',').map(Number);
  const table: Row[] = [];
  const sets: { ds: DataSet; source: string }[] = [
    { ds: FEBRL, source: FEBRL.source },
    { ds: FAKE, source: FAKE.source },
  ];
  const synthetic = Number(args.synthetic);
  if (synthetic > 0) {
    const source = await synthesize(conn, synthetic, Number(args.seed));
    sets.push({
      ds: { ...FAKE, name: `synthetic ${synthetic.toLocaleString('en')}`, settings: SYNTHETIC_SETTINGS },
      source,
    });
  }
  for (const { ds, source } of sets) {
    const truth = await truthOf(conn, source);
    const baseMs: number[] = [];
    let base: Map<string, string> = new Map();
    for (let i = 0; i < runs; i++) {
      const t0 = performance.now();
      base = await deterministic(conn, ds, source);
      baseMs.push(performance.now() - t0);
    }
    table.push({
      data: ds.name,
      method: 'deterministic rules',
      records: truth.size,
      scores: scoreClusters(base, truth),
      ms: median(baseMs),
    });
    let last: Awaited<ReturnType<typeof runProbabilistic>> | undefined;
    for (const threshold of thresholds) {
      const times: number[] = [];
      for (let i = 0; i < runs; i++) {
        last = await runProbabilistic(conn, ds, source, threshold);
        times.push(last.ms);
      }
      table.push({
        data: ds.name,
        method: `probabilistic (p >= ${threshold})`,
        records: last!.records,
        scores: scoreClusters(last!.predicted, truth),
        ms: median(times),
      });
    }
    if (args.verbose) {
      const m = last!.model;
      console.log(
        `${ds.name}: prior ${m.prior.toExponential(3)}, ${m.candidatePairs} candidate pairs, ${m.randomPairs} random pairs`,
      );
      for (const f of m.fields)
        console.log(
          `  ${f.name}: ${f.levels
            .slice(1)
            .map((l) => `${l.label} m=${l.m.toFixed(3)} u=${l.u.toExponential(2)} w=${l.weight.toFixed(2)}`)
            .join(' | ')}`,
        );
      for (const t of m.training)
        console.log(
          `  rule ${t.rule}: ${t.pairs} pairs, lambda ${t.lambda.toFixed(3)}, ${t.iterations} iterations${t.converged ? '' : ' (not converged)'}`,
        );
    }
  }
  if (synthetic > 0 && args.store) {
    const { ds, source } = sets[sets.length - 1]!;
    const r = await storeRun(source, conn, ds.settings);
    table.push({
      data: ds.name,
      method: 'identity store, full run (p >= 0.99)',
      records: r.records,
      scores: r.scores,
      ms: r.ms,
    });
    console.log(`identity store: ${r.merged} merges, ${r.refused} refused (identifier limits, blocks)`);
  }
  console.log(
    markdownTable(
      [
        'data',
        'method',
        'records',
        'precision',
        'recall',
        'F1',
        'B-cubed P',
        'B-cubed R',
        'B-cubed F1',
        'time (median)',
      ],
      table.map((r) => [
        r.data,
        r.method,
        r.records.toLocaleString('en'),
        f3(r.scores.precision),
        f3(r.scores.recall),
        f3(r.scores.f1),
        f3(r.scores.bcubedPrecision),
        f3(r.scores.bcubedRecall),
        f3(r.scores.bcubedF1),
        `${(r.ms / 1000).toFixed(2)} s`,
      ]),
      ['l', 'l', 'r', 'r', 'r', 'r', 'r', 'r', 'r', 'r'],
    ),
  );
  conn.closeSync();
  instance.closeSync();
}

await main();
