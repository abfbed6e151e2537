import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
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
 * Issue 19 in scale-out: the first owner, sessions, tokens and the audit trail in PostgreSQL
 * (schema `<state schema>_governance`), through an ingest-and-worker process.
 */

const skip = (await pgUnreachable()) ?? (await natsUnreachable());
const ADMIN_TOKEN = 'scale-gov-admin';

if (skip) {
  describe.skip(`governance in scale-out (PostgreSQL or NATS unreachable: ${skip})`, () => {
    it('needs PostgreSQL and NATS', () => {});
  });
} else {
  describe('governance in scale-out', () => {
    const stream = `trib_gov_${randomBytes(6).toString('hex')}`;
    const dataDir = mkdtempSync(join(tmpdir(), 'tributary-gov-'));
    let db: ScratchDatabase;
    beforeAll(async () => {
      db = await scratchDatabase('trib_gov');
    });
    afterAll(async () => {
      await db.drop();
      const nc = await connect({ servers: [NATS_URL] });
      await (await jetstreamManager(nc)).streams.delete(stream).catch(() => undefined);
      await nc.close();
      rmSync(dataDir, { recursive: true, force: true });
    });

    it('makes the first owner, logs in, audits in PostgreSQL, and a restart makes no second owner', {
      timeout: 120_000,
    }, async () => {
      const { config } = parseConfig(
        `version: 1
sources:
  - {id: web, type: http, writeKey: wk_gov}
identity: {enabled: false}
log: {type: nats, servers: ["${NATS_URL}"], stream: ${stream}, partitions: 1}
state: {type: postgres, connectionString: "${db.url}", maxConnections: 4}
destinations: []
`,
        {},
      );
      const start = () =>
        startScaleOut({
          role: 'all',
          config,
          dataDir,
          adminToken: ADMIN_TOKEN,
          logger: pino({ level: 'silent' }),
          port: 0,
          host: '127.0.0.1',
        });
      const server = await start();
      try {
        expect(server.firstOwner?.name).toBe('owner');
        const login = await fetch(`${server.url}/admin/v1/session`, {
          method: 'POST',
          body: JSON.stringify({ user: 'owner', password: server.firstOwner!.password }),
        });
        expect(login.status).toBe(200);
        const cookie = String(login.headers.get('set-cookie')).split(';')[0]!;
        const { csrfToken } = (await login.json()) as { csrfToken: string };
        const made = await fetch(`${server.url}/admin/v1/tokens`, {
          method: 'POST',
          headers: { cookie, 'x-csrf-token': csrfToken },
          body: JSON.stringify({ name: 'svc', service: true, role: 'viewer' }),
        });
        expect(made.status).toBe(201);
        const { token } = (await made.json()) as { token: string };
        const stats = await fetch(`${server.url}/admin/v1/stats`, {
          headers: { authorization: `Bearer ${token}` },
        });
        expect(stats.status).toBe(200);
        const denied = await fetch(`${server.url}/admin/v1/failed`, {
          headers: { authorization: `Bearer ${token}` },
        });
        expect(denied.status).toBe(403);
      } finally {
        await server.close();
      }

      const c = new pg.Client(db.config);
      await c.connect();
      try {
        const rows = (
          await c.query<{ action: string; actor_name: string; outcome: string }>(
            `SELECT action, actor_name, outcome FROM tributary_governance.audit_log ORDER BY "at"`,
          )
        ).rows;
        expect(rows.map((r) => `${r.action} ${r.actor_name} ${r.outcome}`)).toEqual([
          'session.login owner ok',
          'tokens.create owner ok',
          'failed.list svc denied',
        ]);
        const users = (await c.query('SELECT name, password_hash FROM tributary_governance.users')).rows;
        expect(users).toHaveLength(1);
        expect(users[0].password_hash).toMatch(/^\$argon2id\$/);
        await expect(c.query('DELETE FROM tributary_governance.audit_log')).rejects.toThrow(/append-only/);
      } finally {
        await c.end();
      }

      const again = await start();
      try {
        expect(again.firstOwner).toBeUndefined();
      } finally {
        await again.close();
      }
    });
  });
}
