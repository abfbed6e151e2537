/**
 * Identity resolution benchmark: a seeded generator of people with devices, emails, logins,
 * shared devices and placeholder values, with ground truth. In one run it measures
 *  - the real identity stage on the embedded default (events read from DuckDB's `events`
 *    through the feed, resolved, committed to the DuckDB identity store), and
 *  - an in-memory union-find over the same identifier edges (the baseline),
 * and prints identity events/s, their ratio, and pairwise precision, recall and F1 of both
 * against the truth: over the deterministic events, and over all events.
 *
 *   npm run bench:identity -- [--people N] [--seed S] [--batch N] [--runs N] [--er-csv FILE] [--stage-only]
 *
 * `--stage-only` runs the stage alone (no baselines, no table): for profiling it.
 *
 * `--er-csv` adds a secondary measure on a labelled person-record file (columns unique_id,
 * first_name, surname, dob, city, email, cluster, as splink's fake_1000.csv): each row goes
 * through the engine as a CRM record (as `tributary import csv` sends it), and the profiles
 * are scored against `cluster`.
 */
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { cpus, loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { DuckDBInstance } from '@duckdb/node-api';
import { parse as parseCsv } from 'csv-parse/sync';
import { parseMappings, rowToIdentify } from '../src/cli/import.js';
import { IDENTITY_DEFAULTS } from '../src/config/identity-schema.js';
import { StorageConfig } from '../src/config/schema.js';
import { DuckDBIdentityStore } from '../src/identity/duckdb/duckdb-identity-store.js';
import { compileRules, extractIdentifiers } from '../src/identity/identifiers.js';
import { IdentityEngine, toIdentityEvent } from '../src/identity/identity-engine.js';
import { IdentityStage } from '../src/identity/identity-stage.js';
import type { IdentityStore } from '../src/identity/identity-store.js';
import { EventFeed } from '../src/pipeline/event-feed.js';
import { embeddedDuckDBOptions } from '../src/platform/duckdb/duckdb-options.js';
import { DuckDBStore } from '../src/store/duckdb/duckdb-store.js';
import type { EventRow, StoredEvent } from '../src/store/store.js';
import { prng } from './lib/events.js';
import { int, markdownTable } from './lib/report.js';

const { values: args } = parseArgs({
  options: {
    people: { type: 'string', default: '20000' },
    seed: { type: 'string', default: '42' },
    batch: { type: 'string', default: '20000' },
    runs: { type: 'string', default: '3' },
    'er-csv': { type: 'string' },
    'stage-only': { type: 'boolean', default: false },
  },
});

interface Generated {
  rows: EventRow[];
  /** messageId → person. */
  truth: Map<string, number>;
  /** messageIds whose person the identifiers determine (not anonymous events on a shared device). */
  deterministic: Set<string>;
  people: number;
  sharedDevices: number;
  placeholders: number;
}

const PLACEHOLDER_EMAILS = ['null', 'undefined', 'N/A', 'test@example.com', '0'];
const T0 = Date.parse('2026-10-01T00:00:00Z');

/**
 * Each person has a user id, an email (5% a placeholder instead), 1-3 devices (anonymous id
 * and device id). On each device: anonymous events, a sign-up form (email only) on some,
 * a login (userId and email), then identified events. 3% of people share a tablet with the
 * previous person, who logged in there first. Events are delivered in timestamp order with
 * jitter, so some arrive out of order.
 */
function generate(people: number, seed: number): Generated {
  const rnd = prng(seed);
  const pick = <T>(xs: readonly T[]) => xs[Math.floor(rnd() * xs.length)]!;
  const evs: { ts: number; person: number; det: boolean; e: Record<string, unknown> }[] = [];
  let sharedDevices = 0;
  let placeholders = 0;
  let n = 0;
  // Decided up front: whose tablet (device 0) the next person will also use.
  const lendsTablet = Array.from({ length: people }, (_, p) => p < people - 1 && rnd() < 0.03);
  for (let p = 0; p < people; p++) {
    const userId = `user-${p}`;
    const placeholder = rnd() < 0.05;
    if (placeholder) placeholders++;
    const email = placeholder ? pick(PLACEHOLDER_EMAILS) : `Person.${p}@Example.com`;
    const start = T0 + Math.floor(rnd() * 20 * 86_400_000);
    const devices: { anon: string; device: string; shared: boolean }[] = [];
    const count = 1 + Math.floor(rnd() * 3);
    for (let d = 0; d < count; d++)
      devices.push({ anon: `anon-${p}-${d}`, device: `dev-${p}-${d}`, shared: false });
    if (lendsTablet[p]) devices[0]!.shared = true;
    if (p > 0 && lendsTablet[p - 1]) {
      // The previous person's tablet, where they logged in first.
      devices.push({ anon: `anon-${p - 1}-0`, device: `dev-${p - 1}-0`, shared: true });
      sharedDevices++;
    }
    devices.forEach((dev, d) => {
      let ts = start + d * 3_600_000 + (dev.shared ? 10 * 86_400_000 : 0);
      const ctx = { device: { id: dev.device } };
      const add = (e: Record<string, unknown>, det: boolean) => {
        ts += 1_000 + Math.floor(rnd() * 60_000);
        evs.push({ ts, person: p, det, e: { ...e, context: ctx, messageId: `m-${n++}` } });
      };
      const anonymousDet = !dev.shared;
      const before = Math.floor(rnd() * 4);
      for (let i = 0; i < before; i++)
        add({ type: 'page', anonymousId: dev.anon, name: 'Home' }, anonymousDet);
      if (!dev.shared && rnd() < 0.3) {
        // A sign-up form: email only. With a placeholder email it says nothing about who this is.
        add(
          { type: 'identify', anonymousId: dev.anon, traits: { email, newsletter: true } },
          !placeholder && anonymousDet,
        );
      }
      add({ type: 'identify', anonymousId: dev.anon, userId, traits: { email, name: `Person ${p}` } }, true);
      const after = 1 + Math.floor(rnd() * 5);
      for (let i = 0; i < after; i++) {
        add(
          {
            type: 'track',
            anonymousId: dev.anon,
            userId,
            event: 'Order Completed',
            properties: { total: 10 },
          },
          true,
        );
      }
      // Later anonymous browsing on the device (the shared tablet: ambiguous).
      if (rnd() < 0.5) add({ type: 'page', anonymousId: dev.anon, name: 'Later' }, anonymousDet);
    });
  }
  // Delivery order: by timestamp with up to 2 minutes of jitter (out-of-order arrival).
  const order = evs
    .map((e) => ({ e, key: e.ts + Math.floor(rnd() * 120_000) }))
    .sort((a, b) => a.key - b.key);
  const rows: EventRow[] = [];
  const truth = new Map<string, number>();
  const deterministic = new Set<string>();
  order.forEach(({ e }, i) => {
    const at = new Date(e.ts).toISOString();
    const json = JSON.stringify({ ...e.e, timestamp: at, receivedAt: at });
    const messageId = String(e.e.messageId);
    rows.push({ messageId, sourceId: 'web', receivedAt: e.ts, logOffset: i, json });
    truth.set(messageId, e.person);
    if (e.det) deterministic.add(messageId);
  });
  return { rows, truth, deterministic, people, sharedDevices, placeholders };
}

/** Pairwise precision, recall and F1 of a clustering (messageId → cluster) against the truth. */
function pairwise(
  predicted: Map<string, string>,
  truth: Map<string, number>,
  only: Set<string> | undefined,
): { precision: number; recall: number; f1: number } {
  const pairs = (counts: Map<string, number>) => {
    let s = 0;
    for (const c of counts.values()) s += (c * (c - 1)) / 2;
    return s;
  };
  const byPred = new Map<string, number>();
  const byTrue = new Map<string, number>();
  const byBoth = new Map<string, number>();
  let solo = 0;
  for (const [id, person] of truth) {
    if (only && !only.has(id)) continue;
    const cluster = predicted.get(id) ?? `none-${solo++}`;
    byPred.set(cluster, (byPred.get(cluster) ?? 0) + 1);
    byTrue.set(String(person), (byTrue.get(String(person)) ?? 0) + 1);
    const k = `${cluster}\u0000${person}`;
    byBoth.set(k, (byBoth.get(k) ?? 0) + 1);
  }
  const tp = pairs(byBoth);
  const precision = tp / pairs(byPred);
  const recall = tp / pairs(byTrue);
  return { precision, recall, f1: (2 * precision * recall) / (precision + recall) };
}

class UnionFind {
  private readonly parent = new Map<string, string>();
  find(x: string): string {
    let root = x;
    for (;;) {
      const p = this.parent.get(root);
      if (p === undefined || p === root) break;
      root = p;
    }
    let cur = x;
    while (cur !== root) {
      const next = this.parent.get(cur) ?? root;
      this.parent.set(cur, root);
      cur = next;
    }
    if (!this.parent.has(root)) this.parent.set(root, root);
    return root;
  }
  union(a: string, b: string): void {
    const ra = this.find(a);
    const rb = this.find(b);
    if (ra !== rb) this.parent.set(rb, ra);
  }
}

interface Run {
  ms: number;
  /** CPU time of the process over the run (event loop and DuckDB's threads), ms. */
  cpuMs: number;
  clusters: Map<string, string>;
}

function timed<T>(fn: () => T): { value: T; ms: number; cpuMs: number } {
  const cpu = process.cpuUsage();
  const t = performance.now();
  const value = fn();
  const ms = performance.now() - t;
  const used = process.cpuUsage(cpu);
  return { value, ms, cpuMs: (used.user + used.system) / 1000 };
}

function runUnionFind(rows: readonly EventRow[], edges: readonly string[][]): Run {
  const r = timed(() => {
    const uf = new UnionFind();
    for (const keys of edges) {
      if (keys.length === 0) continue;
      uf.find(keys[0]!);
      for (let i = 1; i < keys.length; i++) uf.union(keys[0]!, keys[i]!);
    }
    const clusters = new Map<string, string>();
    rows.forEach((row, i) => {
      const keys = edges[i]!;
      if (keys.length > 0) clusters.set(row.messageId, uf.find(keys[0]!));
    });
    return clusters;
  });
  return { ms: r.ms, cpuMs: r.cpuMs, clusters: r.value };
}

function runEngine(rows: readonly EventRow[], rules: ReturnType<typeof compileRules>): Run {
  const r = timed(() => {
    const engine = new IdentityEngine(rules);
    const clusters = new Map<string, string>();
    const decisions = rows.map((row) => engine.resolve(toIdentityEvent(row as StoredEvent, rules)));
    engine.takeChanges();
    decisions.forEach((d, i) => {
      if (d.profileId !== null) clusters.set(rows[i]!.messageId, engine.current(d.profileId) ?? d.profileId);
    });
    return clusters;
  });
  return { ms: r.ms, cpuMs: r.cpuMs, clusters: r.value };
}

/** The real stage on the embedded default: events in DuckDB's `events`, the feed, the DuckDB store. */
async function runStage(
  rows: readonly EventRow[],
  rules: ReturnType<typeof compileRules>,
  maxBatch: number,
): Promise<
  Run & { readMs: number; prepareMs: number; commitMs: number; profiles: number; pageFaults: number }
> {
  const total = rows.length;
  const dir = mkdtempSync(join(tmpdir(), 'trib-bench-identity-'));
  try {
    // As the server opens it (threads: cores - 1, so the event loop keeps a core).
    const instance = await DuckDBInstance.create(
      join(dir, 'warehouse.duckdb'),
      embeddedDuckDBOptions(StorageConfig.parse({})),
    );
    const warehouse = await DuckDBStore.open(instance);
    for (let i = 0; i < total; i += 10_000) {
      await warehouse.write({
        events: rows.slice(i, i + 10_000),
        failed: [],
        consumer: 'warehouse',
        nextOffset: Math.min(i + 10_000, total),
      });
    }
    await warehouse.query('CHECKPOINT');
    const loader = { position: () => total, onLoaded: () => () => undefined };
    // Timed wrappers, to say where the stage's time goes.
    let readMs = 0;
    let prepareMs = 0;
    let commitMs = 0;
    const feed = new EventFeed(
      {
        readEvents: async (from, to, limit) => {
          const t = performance.now();
          const r = await warehouse.readEvents(from, to, limit);
          readMs += performance.now() - t;
          return r;
        },
      },
      loader,
    );
    const store = await DuckDBIdentityStore.open(instance, { computed: [] });
    const timedStore: IdentityStore = Object.assign(Object.create(store) as IdentityStore, {
      prepareCommit: async (...a: Parameters<IdentityStore['prepareCommit']>) => {
        const t = performance.now();
        const write = await store.prepareCommit(...a);
        prepareMs += performance.now() - t;
        return async () => {
          const t = performance.now();
          await write();
          commitMs += performance.now() - t;
        };
      },
    });
    const stage = await IdentityStage.open(timedStore, rules, {
      maxBatch,
      onError: (e) => console.error(e),
    });
    const cpu = process.cpuUsage();
    const faults = process.resourceUsage().minorPageFault;
    const start = performance.now();
    stage.follow(feed);
    await stage.drained();
    const ms = performance.now() - start;
    const used = process.cpuUsage(cpu);
    const pageFaults = process.resourceUsage().minorPageFault - faults;
    await stage.stop();
    const mapped = (await warehouse.query('SELECT message_id, profile_id FROM events_with_profile')).rows;
    const clusters = new Map<string, string>();
    for (const r of mapped)
      if (r.profile_id !== null) clusters.set(String(r.message_id), String(r.profile_id));
    const profiles = Number((await warehouse.query('SELECT count(*) AS n FROM profiles')).rows[0]!.n);
    await store.close();
    await warehouse.close();
    instance.closeSync();
    return {
      ms,
      cpuMs: (used.user + used.system) / 1000,
      clusters,
      readMs,
      prepareMs,
      commitMs,
      profiles,
      pageFaults,
    };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

async function main() {
  const people = Number(args.people);
  const seed = Number(args.seed);
  const maxBatch = Number(args.batch);
  const runs = Math.max(1, Number(args.runs));
  const gen = generate(people, seed);
  const rules = compileRules(IDENTITY_DEFAULTS);
  const total = gen.rows.length;
  const load = () =>
    loadavg()
      .map((l) => l.toFixed(2))
      .join(' ');
  console.log(
    `generator: seed ${seed}, ${int(people)} people, ${int(total)} events, ${int(gen.sharedDevices)} shared devices, ${int(gen.placeholders)} placeholder emails, ${int(gen.deterministic.size)} deterministic events`,
  );
  console.log(
    `machine: ${cpus().length} cores (${cpus()[0]?.model}), Node ${process.version}, load average ${load()}`,
  );

  // The same edges for the baseline: each event's identifiers (normalised, placeholders blocked).
  const edges = gen.rows.map((r) =>
    extractIdentifiers(JSON.parse(r.json), r.sourceId, rules).identifiers.map((i) => i.key),
  );

  const uf: Run[] = [];
  const engine: Run[] = [];
  const stage: Awaited<ReturnType<typeof runStage>>[] = [];
  if (args['stage-only']) {
    for (let i = 0; i < runs; i++) {
      const s = await runStage(gen.rows, rules, maxBatch);
      console.log(
        `run ${i + 1}/${runs}: stage ${int(total / (s.ms / 1000))}/s, ${int(total / (s.cpuMs / 1000))} per CPU-second (${s.ms.toFixed(0)} ms: reading ${s.readMs.toFixed(0)} ms, building rows ${s.prepareMs.toFixed(0)} ms, store transactions ${s.commitMs.toFixed(0)} ms), ${int(s.pageFaults)} page faults, load average ${load()}`,
      );
    }
    return;
  }
  for (let i = 0; i < runs; i++) {
    uf.push(runUnionFind(gen.rows, edges));
    engine.push(runEngine(gen.rows, rules));
    stage.push(await runStage(gen.rows, rules, maxBatch));
    const s = stage[stage.length - 1]!;
    console.log(
      `run ${i + 1}/${runs}: union-find ${int(total / (uf[i]!.ms / 1000))}/s, engine ${int(total / (engine[i]!.ms / 1000))}/s, stage ${int(total / (s.ms / 1000))}/s (${s.ms.toFixed(0)} ms: reading ${s.readMs.toFixed(0)} ms, building rows ${s.prepareMs.toFixed(0)} ms, store transactions ${s.commitMs.toFixed(0)} ms), load average ${load()}`,
    );
  }

  const rate = (xs: Run[]) => total / (median(xs.map((x) => x.ms)) / 1000);
  const cpuRate = (xs: Run[]) => total / (median(xs.map((x) => x.cpuMs)) / 1000);
  const f = (x: number) => x.toFixed(4);
  const quality = (c: Map<string, string>) =>
    [pairwise(c, gen.truth, gen.deterministic), pairwise(c, gen.truth, undefined)].flatMap((m) => [
      f(m.precision),
      f(m.recall),
      f(m.f1),
    ]);
  console.log(`profiles: ${stage[0]!.profiles} (true people: ${people}); medians of ${runs} run(s):`);
  console.log(
    markdownTable(
      [
        'resolver',
        'events/s',
        'per CPU-second',
        'P (det.)',
        'R (det.)',
        'F1 (det.)',
        'P (all)',
        'R (all)',
        'F1 (all)',
      ],
      [
        ['union-find (in memory, baseline)', int(rate(uf)), int(cpuRate(uf)), ...quality(uf[0]!.clusters)],
        [
          'identity engine (in memory, no store)',
          int(rate(engine)),
          int(cpuRate(engine)),
          ...quality(engine[0]!.clusters),
        ],
        [
          `identity stage (feed + DuckDB store, batches of ${maxBatch})`,
          int(rate(stage)),
          int(cpuRate(stage)),
          ...quality(stage[0]!.clusters),
        ],
      ],
      ['l', 'r', 'r', 'r', 'r', 'r', 'r', 'r', 'r'],
    ),
  );
  console.log(
    `stage / union-find: ${(rate(stage) / rate(uf)).toFixed(3)}; engine / union-find: ${(rate(engine) / rate(uf)).toFixed(3)}; stage / engine: ${(rate(stage) / rate(engine)).toFixed(3)}`,
  );
  console.log(`load average after: ${load()}`);
}

/** Records of a labelled file resolved as CRM contacts, scored against the file's clusters. */
function erMeasure(file: string, rules: ReturnType<typeof compileRules>): void {
  const records = parseCsv(readFileSync(file), {
    columns: true,
    skip_empty_lines: true,
    bom: true,
  }) as Record<string, string>[];
  const mappings = parseMappings([
    'email=email',
    'first_name=first_name',
    'last_name=surname',
    'birthday=dob',
  ]);
  const engine = new IdentityEngine(rules);
  const truth = new Map<string, number>();
  const clusters = new Map<string, string>();
  records.forEach((row, i) => {
    const event = rowToIdentify(row, 'crm', { idColumn: 'unique_id' }, mappings);
    const at = new Date(Date.UTC(2026, 0, 1) + i).toISOString();
    const d = engine.resolve(
      toIdentityEvent(
        {
          logOffset: i,
          sourceId: 'crm',
          messageId: String(event.messageId),
          receivedAt: 0,
          json: JSON.stringify({ ...event, timestamp: at }),
        },
        rules,
      ),
    );
    truth.set(String(event.messageId), Number(row.cluster));
    if (d.profileId) clusters.set(String(event.messageId), d.profileId);
  });
  for (const [k, v] of clusters) clusters.set(k, engine.current(v) ?? v);
  const m = pairwise(clusters, truth, undefined);
  console.log(
    `secondary measure, ${file}: ${records.length} records, ${new Set(truth.values()).size} people, ${engine.profiles.size} profiles; exact identifiers only (email): pairwise precision ${m.precision.toFixed(4)}, recall ${m.recall.toFixed(4)}, F1 ${m.f1.toFixed(4)}`,
  );
}

await main();
if (args['er-csv']) erMeasure(args['er-csv'], compileRules(IDENTITY_DEFAULTS));
