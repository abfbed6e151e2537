import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { modelsListCommand, modelsRunCommand, modelsRunsCommand } from '../../src/cli/models.js';
import { parseConfig } from '../../src/config/load.js';
import { type RunningServer, startServer } from '../../src/server/server.js';
import { ADMIN_TOKEN, basicAuth, WRITE_KEY } from '../helpers.js';
import { RowReceiver } from './receiver.js';

/** Reverse ETL in the embedded server: models from the configuration, the admin API and the CLI. */

const YAML = `version: 1
sources:
  - id: web
    type: http
    writeKey: ${WRITE_KEY}
models:
  - id: buyers
    sql: SELECT user_id, count(*) AS orders FROM events WHERE event = 'Order Completed' GROUP BY user_id
    primaryKey: user_id
    destination: crm
    syncMode: mirror
    mapping: { user_id: id, orders: traits.orders }
  - id: profiles
    sql: SELECT profile_id, event_count FROM profiles
    primaryKey: profile_id
    destination: crm
  - id: nowhere
    sql: SELECT 1 AS id
    primaryKey: id
    destination: missing
`;

describe('reverse ETL in the server', () => {
  let rx: RowReceiver;
  let server: RunningServer;
  let dataDir: string;
  const auth = { authorization: `Bearer ${ADMIN_TOKEN}` };

  const track = (userId: string, n: number) => ({
    type: 'track',
    event: 'Order Completed',
    userId,
    messageId: `${userId}-${n}`,
    timestamp: '2026-01-01T00:00:00Z',
  });
  const send = async (batch: object[]) => {
    const res = await server.app.inject({
      method: 'POST',
      url: '/v1/batch',
      headers: { authorization: basicAuth(WRITE_KEY), 'content-type': 'application/json' },
      payload: JSON.stringify({ batch }),
    });
    expect(res.statusCode).toBe(200);
    await server.loader.drained();
    await server.identity?.drained();
  };

  beforeAll(async () => {
    rx = await RowReceiver.start();
    dataDir = mkdtempSync(join(tmpdir(), 'tributary-retl-'));
    server = await startServer({
      config: parseConfig(YAML, {}).config,
      dataDir,
      adminToken: ADMIN_TOKEN,
      logger: pino({ level: 'silent' }),
      port: 0,
      host: '127.0.0.1',
      openStreamDestination: async (id) => {
        if (id !== 'crm') throw new Error(`unknown destination ${id}`);
        return rx.destination(id);
      },
    });
  });
  afterAll(async () => {
    await server?.close();
    await rx?.close();
    rmSync(dataDir, { recursive: true, force: true });
  });

  it('runs a model over the events through the admin API and sends only changes', async () => {
    await send([track('u1', 1), track('u1', 2), track('u2', 1)]);
    const run = await server.app.inject({
      method: 'POST',
      url: '/admin/v1/models/buyers/run',
      headers: auth,
    });
    expect(run.statusCode, run.body).toBe(200);
    expect(run.json()).toMatchObject({ status: 'succeeded', rows: 2, added: 2, failed: 0 });
    expect(rx.table.get('u1')).toEqual({ id: 'u1', traits: { orders: 2 } });

    await send([track('u2', 2)]);
    rx.received.length = 0;
    const again = await server.app.inject({
      method: 'POST',
      url: '/admin/v1/models/buyers/run',
      headers: auth,
    });
    expect(again.json()).toMatchObject({ added: 0, changed: 1, removed: 0 });
    expect(rx.received.map((d) => [d.op, d.orderKey, d.payload])).toEqual([
      ['upsert', 'u2', { id: 'u2', traits: { orders: 2 } }],
    ]);

    const runs = await server.app.inject({
      method: 'GET',
      url: '/admin/v1/models/buyers/runs',
      headers: auth,
    });
    expect(runs.json().runs.map((r: { trigger: string; changed: number }) => [r.trigger, r.changed])).toEqual(
      [
        ['api', 1],
        ['api', 0],
      ],
    );
  });

  it('reads the profile tables', async () => {
    const run = await server.app.inject({
      method: 'POST',
      url: '/admin/v1/models/profiles/run',
      headers: auth,
    });
    expect(run.json()).toMatchObject({ status: 'succeeded', rows: 2, added: 2 });
  });

  it('starts a run in the background with ?wait=false', async () => {
    const unknown = await server.app.inject({
      method: 'POST',
      url: '/admin/v1/models/nope/run?wait=false',
      headers: auth,
    });
    expect(unknown.statusCode).toBe(404);
    const started = await server.app.inject({
      method: 'POST',
      url: '/admin/v1/models/profiles/run?wait=false',
      headers: auth,
    });
    expect(started.statusCode).toBe(202);
    expect(started.json()).toEqual({ model: 'profiles', started: true });
    let runs: { status: string }[] = [];
    for (let i = 0; i < 100; i++) {
      runs = (
        await server.app.inject({ method: 'GET', url: '/admin/v1/models/profiles/runs', headers: auth })
      ).json().runs;
      if (runs.length === 2 && runs[0]!.status !== 'running') break;
      await new Promise((r) => setTimeout(r, 50));
    }
    expect(runs.map((r) => r.status)).toEqual(['succeeded', 'succeeded']);
  });

  it('answers errors with their codes', async () => {
    const unknown = await server.app.inject({
      method: 'POST',
      url: '/admin/v1/models/nope/run',
      headers: auth,
    });
    expect(unknown.statusCode).toBe(404);
    expect(unknown.json().code).toBe('TRIB_ERR_RETL_MODEL_NOT_FOUND');
    const noAuth = await server.app.inject({ method: 'GET', url: '/admin/v1/models' });
    expect(noAuth.statusCode).toBe(401);
    const missing = await server.app.inject({
      method: 'POST',
      url: '/admin/v1/models/nowhere/run',
      headers: auth,
    });
    expect(missing.json()).toMatchObject({
      status: 'failed',
      error: expect.stringMatching(/^TRIB_ERR_RETL_DESTINATION/),
    });
  });

  it('the CLI lists, runs and shows runs through the admin API', async () => {
    const out: string[] = [];
    const write = vi.spyOn(process.stdout, 'write').mockImplementation((chunk) => {
      out.push(String(chunk));
      return true;
    });
    const opts = { url: server.url, token: ADMIN_TOKEN, json: true };
    try {
      await modelsListCommand(opts);
      await modelsRunCommand('buyers', opts);
      await modelsRunsCommand('buyers', { ...opts, limit: '1' });
    } finally {
      write.mockRestore();
    }
    const [list, run, runs] = out.map((l) => JSON.parse(l));
    expect(list.map((m: { id: string }) => m.id)).toEqual(['buyers', 'profiles', 'nowhere']);
    expect(run).toMatchObject({ status: 'succeeded', added: 0, changed: 0 });
    expect(runs).toHaveLength(1);
    expect(runs[0]).toMatchObject({ trigger: 'cli', status: 'succeeded' });
  });
});
