import { randomBytes } from 'node:crypto';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { EVENTS_PER_PERSON, peopleWorkload, personOf } from '../bench/lib/people-workload.js';
import { type Child, CliChildren, kill9, sleep } from './cli-child.js';
import { basicAuth } from './helpers.js';
import { freePort, natsServerMissing, PrivateNats } from './nats-server.js';
import { PG_ADMIN, pgUnreachable } from './pg.js';
import { TcpProxy } from './tcp-proxy.js';

/**
 * The scale-out deployment through the real CLI on the real services: two ingest processes
 * sharing a port (`--role ingest --processes 2`) and two workers (`--role worker`), NATS
 * JetStream as the log (a nats-server of this test's own, so it may restart it) and
 * PostgreSQL as the state and the warehouse (a database of its own). 100,000 events of
 * 10,000 people whose events land in different partitions are sent while one worker and one
 * ingest process are killed with SIGKILL and NATS is restarted. Every acknowledged event must
 * be in `events` and in the Segment tables exactly once, and the people must come out as
 * exactly the expected profiles.
 */

const PEOPLE = 10_000;
const ADMIN_TOKEN = 'scale-out-admin-token';
const WRITE_KEY = 'wk_scale_web';
const skip = (await pgUnreachable()) ?? natsServerMissing();
const database = `trib_scale_${randomBytes(6).toString('hex')}`;
const connectionString = `postgres://${PG_ADMIN.user}@${PG_ADMIN.host}:${PG_ADMIN.port}/${database}`;
/** The read-only role /admin/v1/query runs as (docs/operations.md, "The query role"). */
const queryRole = `${database}_reader`;
const queryConnectionString = `postgres://${queryRole}@${PG_ADMIN.host}:${PG_ADMIN.port}/${database}`;

let workDir: string;
let nats: PrivateNats;
let admin: pg.Client | undefined;
let db: pg.Client | undefined;
const cli = new CliChildren({
  get configPath() {
    return join(workDir, 'tributary.yaml');
  },
  get dataDir() {
    return join(workDir, 'data');
  },
  adminToken: ADMIN_TOKEN,
});

beforeAll(async () => {
  if (skip) return;
  workDir = mkdtempSync(join(tmpdir(), 'tributary-scale-'));
  mkdirSync(join(workDir, 'nats'));
  nats = new PrivateNats(await freePort(), join(workDir, 'nats'));
  await nats.start();
  admin = new pg.Client(PG_ADMIN);
  await admin.connect();
  await admin.query(`CREATE DATABASE ${database}`);
  await admin.query(`CREATE ROLE ${queryRole} LOGIN`);
});

afterAll(async () => {
  await cli.killAll();
  await nats?.stop('SIGKILL');
  await db?.end();
  if (admin) {
    await admin.query(`DROP DATABASE IF EXISTS ${database} WITH (FORCE)`);
    await admin.query(`DROP ROLE IF EXISTS ${queryRole}`);
    await admin.end();
  }
  if (workDir) rmSync(workDir, { recursive: true, force: true });
});

/** Posts batches with `concurrency` senders; a request that fails is sent again until it gets its 200. */
async function send(
  url: string,
  batches: Record<string, unknown>[][],
  concurrency: number,
  onAcked: (acked: number) => Promise<void>,
): Promise<{ acked: number; retries: number }> {
  let next = 0;
  let acked = 0;
  let retries = 0;
  const sender = async () => {
    for (let i = next++; i < batches.length; i = next++) {
      const body = JSON.stringify({ batch: batches[i] });
      for (;;) {
        try {
          const res = await fetch(`${url}/v1/batch`, {
            method: 'POST',
            headers: { authorization: basicAuth(WRITE_KEY), 'content-type': 'application/json' },
            body,
            signal: AbortSignal.timeout(15_000),
          });
          const text = await res.text();
          if (res.status === 200) {
            const invalid = batches[i]!.filter((e) => e.userId === undefined && e.anonymousId === undefined);
            expect(JSON.parse(text).rejected).toHaveLength(invalid.length);
            break;
          }
        } catch {
          // connection reset by a killed ingest process, or a timeout: send again
        }
        retries++;
        await sleep(100);
      }
      acked += batches[i]!.length;
      await onAcked(acked);
    }
  };
  await Promise.all(Array.from({ length: concurrency }, sender));
  return { acked, retries };
}

/**
 * A deployment of a test's own on the shared NATS and database: its configuration file and
 * data folder, its children, and a client to count rows with.
 */
async function deployment(name: string, yaml: string) {
  writeFileSync(join(workDir, `${name}.yaml`), yaml);
  const children = new CliChildren({
    configPath: join(workDir, `${name}.yaml`),
    dataDir: join(workDir, `data-${name}`),
    adminToken: ADMIN_TOKEN,
  });
  const client = new pg.Client({ connectionString });
  await client.connect();
  return {
    children,
    countIn: async (sql: string) => Number((await client.query<{ n: string }>(sql)).rows[0]!.n),
    client,
    async close() {
      await children.killAll();
      await client.end();
    },
  };
}

async function count(sql: string): Promise<number> {
  const r = await db!.query<{ n: string }>(sql);
  return Number(r.rows[0]!.n);
}

describe.skipIf(skip !== undefined)(
  `scale-out on NATS JetStream and PostgreSQL${skip ? ` (${skip})` : ''}`,
  () => {
    it('loses and doubles nothing through kill -9 of a worker and an ingest process and a NATS restart, and resolves the expected profiles', async () => {
      const port = await freePort();
      writeFileSync(
        join(workDir, 'tributary.yaml'),
        `version: 1
server: {port: ${port}}
sources:
  - {id: web, type: http, writeKey: ${WRITE_KEY}}
log: {type: nats, servers: ["${nats.url}"], stream: scale_test, partitions: 8}
state: {type: postgres, connectionString: "${connectionString}", queryConnectionString: "${queryConnectionString}", maxConnections: 6}
destinations:
  - {id: warehouse, type: postgres, connectionString: "${connectionString}", interval: 200ms}
`,
      );
      const ingest = await cli.start(60_000, {
        args: ['--role', 'ingest', '--processes', '2', '--port', String(port), '--host', '127.0.0.1'],
      });
      const workerArgs = {
        args: ['--role', 'worker', '--port', '0', '--host', '127.0.0.1'],
        ready: /health and metrics at (http:\/\/\S+)/,
      };
      const workers: Child[] = [await cli.start(60_000, workerArgs), await cli.start(60_000, workerArgs)];

      const workload = peopleWorkload(PEOPLE, 11);
      const batches: Record<string, unknown>[][] = [];
      for (let i = 0; i < workload.events.length; i += 500) batches.push(workload.events.slice(i, i + 500));
      const total = workload.events.length;
      expect(total).toBe(PEOPLE * EVENTS_PER_PERSON);
      // Ten events without userId or anonymousId, in the first batches: rejected, kept as failed events.
      for (let i = 0; i < 10; i++)
        batches[i]!.push({ type: 'track', event: 'Orphan', messageId: `orphan-${i}` });

      const faults: string[] = [];
      let step = 0;
      const onAcked = async (acked: number) => {
        if (step === 0 && acked >= total * 0.2) {
          step = 1;
          await kill9(workers[0]!);
          faults.push('worker killed');
        } else if (step === 1 && acked >= total * 0.35) {
          step = 2;
          // /healthz answers from one of the two ingest processes and names it.
          const { pid } = (await (await fetch(`${ingest.url}/healthz`)).json()) as { pid: number };
          process.kill(pid, 'SIGKILL');
          faults.push(`ingest process ${pid} killed`);
        } else if (step === 2 && acked >= total * 0.5) {
          step = 3;
          await nats.stop();
          await sleep(1_000);
          await nats.start();
          faults.push('NATS restarted');
        } else if (step === 3 && acked >= total * 0.7) {
          step = 4;
          workers[0] = await cli.start(60_000, workerArgs);
          faults.push('worker restarted');
        }
      };
      const sent = await send(ingest.url, batches, 6, onAcked);
      expect(sent.acked).toBe(total + 10);
      expect(faults).toEqual([
        'worker killed',
        expect.stringMatching(/^ingest process \d+ killed$/),
        'NATS restarted',
        'worker restarted',
      ]);

      db = new pg.Client({ connectionString });
      await db.connect();
      // Wait until the workers have loaded, resolved and delivered everything.
      const deadline = Date.now() + 240_000;
      for (;;) {
        // One client: one query at a time.
        const events = await count('SELECT count(*) AS n FROM tributary.events').catch(() => 0);
        const assigned = await count('SELECT count(*) AS n FROM tributary.profile_event_assignments').catch(
          () => 0,
        );
        const tracks = await count('SELECT count(*) AS n FROM web.tracks').catch(() => 0);
        if (events >= total && assigned >= total && tracks >= workload.counts.tracks) break;
        if (Date.now() > deadline) {
          throw new Error(
            `not caught up: events ${events}, assigned ${assigned}, tracks ${tracks} of ${total}\n${workers.map((w) => w.output()).join('\n')}`,
          );
        }
        await sleep(500);
      }
      await sleep(2_000); // anything redelivered late would show now

      // Exactly once: every acknowledged event once in `events` and in the Segment tables.
      expect(await count('SELECT count(*) AS n FROM tributary.events')).toBe(total);
      expect(await count('SELECT count(DISTINCT message_id) AS n FROM tributary.events')).toBe(total);
      expect(await count('SELECT count(*) AS n FROM web.tracks')).toBe(workload.counts.tracks);
      expect(await count('SELECT count(DISTINCT id) AS n FROM web.tracks')).toBe(workload.counts.tracks);
      expect(await count('SELECT count(*) AS n FROM web.identifies')).toBe(workload.counts.identifies);
      expect(await count('SELECT count(*) AS n FROM web.pages')).toBe(workload.counts.pages);

      // The profiles: one per person, holding exactly that person's four identifiers.
      const profiles = await db.query<{ ids: string }>(
        `SELECT string_agg(type || ':' || value, ',' ORDER BY type || ':' || value) AS ids
       FROM tributary.profile_identifiers GROUP BY profile_id`,
      );
      expect(profiles.rows.length).toBe(PEOPLE);
      expect(new Set(profiles.rows.map((r) => r.ids))).toEqual(
        new Set(workload.profiles.map((p) => p.join(','))),
      );
      expect(await count('SELECT count(*) AS n FROM tributary.profiles')).toBe(PEOPLE);

      // Every event belongs to its person's profile, and no two people share one.
      const assigned = await db.query<{ message_id: string; profile_id: string }>(
        'SELECT message_id, profile_id FROM tributary.events_with_profile',
      );
      expect(assigned.rows.length).toBe(total);
      const profileOfPerson = new Map<number, Set<string>>();
      for (const r of assigned.rows) {
        const person = personOf(r.message_id);
        const set = profileOfPerson.get(person) ?? new Set();
        set.add(r.profile_id);
        profileOfPerson.set(person, set);
      }
      expect(profileOfPerson.size).toBe(PEOPLE);
      const owners = new Set<string>();
      for (const set of profileOfPerson.values()) {
        expect(set.size).toBe(1);
        owners.add([...set][0]!);
      }
      expect(owners.size).toBe(PEOPLE);

      // The rejected events are failed events, once each.
      expect(await count('SELECT count(*) AS n FROM tributary.failed_events')).toBe(10);
      expect(await count('SELECT count(DISTINCT message_id) AS n FROM tributary.failed_events')).toBe(10);

      // Any ingest process answers queries on the state database and serves profiles from it.
      const adminHeaders = { authorization: `Bearer ${ADMIN_TOKEN}`, 'content-type': 'application/json' };
      await db!.query(`GRANT USAGE ON SCHEMA tributary TO ${queryRole};
        GRANT SELECT ON ALL TABLES IN SCHEMA tributary TO ${queryRole}`);
      const q = await fetch(`${ingest.url}/admin/v1/query`, {
        method: 'POST',
        headers: adminHeaders,
        body: JSON.stringify({ sql: 'SELECT count(*) AS n FROM events' }),
      });
      expect(q.status).toBe(200);
      expect(Number(((await q.json()) as { rows: { n: unknown }[] }).rows[0]!.n)).toBe(total);
      const person = workload.profiles[42]!;
      const email = person.find((id) => id.startsWith('email:'))!;
      const res = await fetch(`${ingest.url}/v1/profiles/${encodeURIComponent(email)}`, {
        headers: adminHeaders,
      });
      expect(res.status).toBe(200);
      const profile = (await res.json()) as {
        identifiers: { type: string; value: string }[];
        eventCount: number;
      };
      expect(profile.identifiers.map((i) => `${i.type}:${i.value}`).sort()).toEqual(person);
      expect(profile.eventCount).toBe(EVENTS_PER_PERSON);
    }, 420_000);

    it('runs ingest and worker in one process with --role all', async () => {
      const port = await freePort();
      const all = await deployment(
        'all',
        `version: 1
sources:
  - {id: shop, type: http, writeKey: wk_scale_shop}
log: {type: nats, servers: ["${nats.url}"], stream: scale_all, partitions: 3}
state: {type: postgres, connectionString: "${connectionString}", schema: tributary_all, maxConnections: 4}
# Another id than the first test's: a destination keeps its offsets under its id in its database.
destinations:
  - {id: warehouse_all, type: postgres, connectionString: "${connectionString}", interval: 100ms}
`,
      );
      const { countIn } = all;
      try {
        const server = await all.children.start(60_000, {
          args: ['--role', 'all', '--port', String(port), '--host', '127.0.0.1'],
        });
        const events = [
          { type: 'page', anonymousId: 'a-1', name: 'Home', messageId: 'all-1' },
          {
            type: 'identify',
            anonymousId: 'a-1',
            userId: 'u-1',
            traits: { email: 'One@Example.com' },
            messageId: 'all-2',
          },
          { type: 'track', userId: 'u-1', event: 'Order Completed', messageId: 'all-3' },
        ];
        const res = await fetch(`${server.url}/v1/batch`, {
          method: 'POST',
          headers: { authorization: basicAuth('wk_scale_shop'), 'content-type': 'application/json' },
          body: JSON.stringify({ batch: events }),
        });
        expect(res.status).toBe(200);
        const health = (await (await fetch(`${server.url}/healthz`)).json()) as {
          role: string;
          partitions: object;
        };
        expect(health.role).toBe('all');
        expect(Object.keys(health.partitions).sort()).toEqual(['0', '1', '2']);

        // Loaded, resolved into one profile, and in the Segment tables.
        const deadline = Date.now() + 60_000;
        let profile: { identifiers: { type: string; value: string }[]; eventCount: number } | undefined;
        let tracks = 0;
        while (Date.now() < deadline) {
          const r = await fetch(`${server.url}/v1/profiles/email:one@example.com`, {
            headers: { authorization: `Bearer ${ADMIN_TOKEN}` },
          });
          profile = r.status === 200 ? ((await r.json()) as typeof profile) : undefined;
          tracks = await countIn('SELECT count(*) AS n FROM shop.tracks').catch(() => 0);
          if (profile?.eventCount === 3 && tracks === 1) break;
          await sleep(200);
        }
        expect(profile?.eventCount).toBe(3);
        expect(profile!.identifiers.map((i) => `${i.type}:${i.value}`).sort()).toEqual([
          'anonymous_id:a-1',
          'email:one@example.com',
          'user_id:u-1',
        ]);
        expect(tracks).toBe(1);
        expect(await countIn('SELECT count(*) AS n FROM tributary_all.events')).toBe(3);
        // Caught up: the lags count within each partition; no single-loader log lag here.
        const metrics = await (await fetch(`${server.url}/metrics`)).text();
        expect(metrics).toContain('tributary_identity_lag_events 0');
        expect(metrics).toContain('tributary_destination_lag_events{destination="warehouse_all"} 0');
        expect(metrics).not.toContain('tributary_log_lag_events');
      } finally {
        await all.close();
      }
    }, 120_000);

    it('keeps collecting while PostgreSQL is unreachable; the workers stop, take their partitions again and lose or double nothing', async () => {
      const proxy = new TcpProxy(PG_ADMIN.host!, PG_ADMIN.port!);
      await proxy.start();
      const viaProxy = `postgres://${PG_ADMIN.user}@127.0.0.1:${proxy.port}/${database}`;
      const port = await freePort();
      const pgdown = await deployment(
        'pgdown',
        `version: 1
server: {port: ${port}}
sources:
  - {id: web, type: http, writeKey: ${WRITE_KEY}}
log: {type: nats, servers: ["${nats.url}"], stream: scale_pgdown, partitions: 4}
state: {type: postgres, connectionString: "${viaProxy}", schema: tributary_pgdown, maxConnections: 4}
destinations:
  - {id: warehouse_pgdown, type: postgres, connectionString: "${viaProxy}", schema: "pgdown_{source}", interval: 200ms}
`,
      );
      const { children, countIn, client: c } = pgdown;
      try {
        const ingest = await children.start(60_000, {
          args: ['--role', 'ingest', '--port', String(port), '--host', '127.0.0.1'],
        });
        const worker = await children.start(60_000, {
          args: ['--role', 'worker', '--port', '0', '--host', '127.0.0.1'],
          ready: /health and metrics at (http:\/\/\S+)/,
        });
        const people = 2_000;
        const workload = peopleWorkload(people, 5, 'd');
        const batches: Record<string, unknown>[][] = [];
        for (let i = 0; i < workload.events.length; i += 250) batches.push(workload.events.slice(i, i + 250));
        const total = workload.events.length;
        // PostgreSQL is cut off for 4 s once 30% are acknowledged.
        let ackedNow = 0;
        let atCut = -1;
        let atRestore = -1;
        const sent = await send(ingest.url, batches, 4, async (acked) => {
          ackedNow = acked;
          if (atCut < 0 && acked >= total * 0.3) {
            atCut = acked;
            proxy.cut();
            setTimeout(() => {
              atRestore = ackedNow;
              proxy.restore();
            }, 4_000);
          }
        });
        expect(sent.acked).toBe(total);
        // Collection does not need PostgreSQL: requests were acknowledged during the outage
        // (all the rest, when sending ended before it did).
        if (atRestore < 0) atRestore = ackedNow;
        expect(atRestore).toBeGreaterThan(atCut);

        const deadline = Date.now() + 60_000;
        for (;;) {
          const events = await countIn('SELECT count(*) AS n FROM tributary_pgdown.events').catch(() => 0);
          const assigned = await countIn(
            'SELECT count(*) AS n FROM tributary_pgdown.profile_event_assignments',
          ).catch(() => 0);
          const tracks = await countIn('SELECT count(*) AS n FROM pgdown_web.tracks').catch(() => 0);
          if (events >= total && assigned >= total && tracks >= workload.counts.tracks) break;
          if (Date.now() > deadline) {
            const h = await fetch(`${worker.url}/healthz`).then(
              (r) => r.text(),
              (e) => String(e),
            );
            throw new Error(
              `not caught up: ${events} ${assigned} ${tracks}\n${h}\n${worker.output().slice(-8000)}`,
            );
          }
          await sleep(300);
        }
        await sleep(1_500);
        expect(await countIn('SELECT count(DISTINCT message_id) AS n FROM tributary_pgdown.events')).toBe(
          total,
        );
        expect(await countIn('SELECT count(*) AS n FROM tributary_pgdown.events')).toBe(total);
        expect(await countIn('SELECT count(*) AS n FROM tributary_pgdown.profile_event_assignments')).toBe(
          total,
        );
        expect(await countIn('SELECT count(*) AS n FROM pgdown_web.tracks')).toBe(workload.counts.tracks);
        expect(await countIn('SELECT count(DISTINCT id) AS n FROM pgdown_web.tracks')).toBe(
          workload.counts.tracks,
        );
        const profiles = await c.query<{ ids: string }>(
          `SELECT string_agg(type || ':' || value, ',' ORDER BY type || ':' || value) AS ids
           FROM tributary_pgdown.profile_identifiers GROUP BY profile_id`,
        );
        expect(new Set(profiles.rows.map((r) => r.ids))).toEqual(
          new Set(workload.profiles.map((p) => p.join(','))),
        );
        expect(profiles.rows.length).toBe(people);
      } finally {
        await pgdown.close();
        await proxy.stop();
      }
    }, 240_000);
  },
);
