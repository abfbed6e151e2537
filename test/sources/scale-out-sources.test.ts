import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { jetstreamManager } from '@nats-io/jetstream';
import { connect } from '@nats-io/transport-node';
import pg from 'pg';
import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseConfig } from '../../src/config/load.js';
import { startScaleOut } from '../../src/server/scale-out.js';
import { NATS_URL, natsUnreachable } from '../nats-server.js';
import { pgUnreachable, type ScratchDatabase, scratchDatabase } from '../pg.js';

/**
 * Pull sources in scale-out: state, runs, objects and failures in PostgreSQL, events through
 * NATS to the workers, and one sync of a source at a time across processes (an advisory lock).
 */

const skip = (await pgUnreachable()) ?? (await natsUnreachable());

if (skip) {
  describe.skip(`scale-out sources (PostgreSQL or NATS unreachable: ${skip})`, () => {
    it('needs PostgreSQL and NATS', () => {});
  });
} else {
  describe('scale-out: a file source', () => {
    const id = randomBytes(6).toString('hex');
    const stream = `trib_src_${id}`;
    const dir = mkdtempSync(join(tmpdir(), 'tributary-src-scale-'));
    let db: ScratchDatabase;
    beforeAll(async () => {
      db = await scratchDatabase('trib_src_scale');
    });
    afterAll(async () => {
      await db.drop();
      const nc = await connect({ servers: [NATS_URL] });
      await (await jetstreamManager(nc)).streams.delete(stream).catch(() => undefined);
      await nc.close();
      rmSync(dir, { recursive: true, force: true });
    });

    it('syncs into PostgreSQL, loads its events through the workers, and runs one sync of a source at a time', {
      timeout: 120_000,
    }, async () => {
      writeFileSync(
        join(dir, 'contacts.csv'),
        'id,email,plan\n1,ada@example.com,pro\n2,bob@example.com,free\n3,cy@example.com,\n',
      );
      const yaml = `version: 1
sources:
  - {id: web, type: http, writeKey: wk_src}
  - id: crm
    type: file
    streams:
      - name: contacts
        path: ${join(dir, '*.csv')}
        primaryKey: [id]
        columns: { id: integer }
        events: { type: identify, userId: id, traits: [email, plan] }
identity: {enabled: false}
log: {type: nats, servers: ["${NATS_URL}"], stream: ${stream}, partitions: 1}
state: {type: postgres, connectionString: "${db.url}", maxConnections: 6}
destinations: []
`;
      const { config } = parseConfig(yaml, {});
      const opts = {
        config,
        dataDir: join(dir, 'data'),
        logger: pino({ level: 'silent' }),
        port: 0,
        host: '127.0.0.1',
      };
      const a = await startScaleOut({ ...opts, role: 'all', adminToken: 'src-admin' });
      const b = await startScaleOut({ ...opts, role: 'ingest', adminToken: 'src-admin' });
      const pool = new pg.Pool({ ...db.config, max: 2 });
      try {
        const sync = (url: string) =>
          fetch(`${url}/admin/v1/sources/crm/sync?wait=true`, {
            method: 'POST',
            headers: { authorization: 'Bearer src-admin' },
          }).then(async (r) => ({ status: r.status, body: (await r.json()) as Record<string, unknown> }));
        // Two processes asked at once: one syncs, the other answers busy (or, if the first is
        // done by then, reads nothing new).
        const [r1, r2] = await Promise.all([sync(a.url!), sync(b.url!)]);
        const outcomes = [r1, r2]
          .map((r) => (r.status === 409 ? 'busy' : `${r.body.status}:${r.body.rows}`))
          .sort();
        expect([
          ['busy', 'succeeded:3'],
          ['succeeded:0', 'succeeded:3'],
        ]).toContainEqual(outcomes);
        const objects = await pool.query('SELECT id, email, plan FROM crm.contacts ORDER BY id');
        expect(objects.rows).toEqual([
          { id: '1', email: 'ada@example.com', plan: 'pro' },
          { id: '2', email: 'bob@example.com', plan: 'free' },
          { id: '3', email: 'cy@example.com', plan: null },
        ]);
        for (;;) {
          const n = await pool.query<{ n: string }>(
            "SELECT count(*) AS n FROM tributary.events WHERE source_id = 'crm' AND type = 'identify'",
          );
          if (Number(n.rows[0]!.n) === 3) break;
          await new Promise((r) => setTimeout(r, 100));
        }
        const runs = await fetch(`${b.url}/admin/v1/sources/crm/runs`, {
          headers: { authorization: 'Bearer src-admin' },
        });
        const body = (await runs.json()) as { runs: { status: string; rows: number }[] };
        expect(body.runs.some((r) => r.status === 'succeeded' && r.rows === 3)).toBe(true);
      } finally {
        await pool.end();
        await b.close();
        await a.close();
      }
    });
  });
}
