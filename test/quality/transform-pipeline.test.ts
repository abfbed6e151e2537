import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { ADMIN_TOKEN, basicAuth, cleanupAfterEach, startTestServer, WRITE_KEY } from '../helpers.js';
import { shapeFunction } from './functions.js';

const { servers, dirs } = cleanupAfterEach();

const FUNCTION = shapeFunction({ log: 'saw', error: 'no boom here', property: 'enriched' });

function config(dir: string) {
  return `version: 1
sources:
  - id: web
    type: http
    writeKey: ${WRITE_KEY}
    transformations:
      - id: enrich
        file: ${join(dir, 'enrich.ts')}
        timeout: 250ms
        memoryLimit: 32
`;
}

describe('transformations in the pipeline', () => {
  it('a throw or a timeout sends that event to failed_events with the log lines; the pipeline goes on', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'trib-fn-'));
    dirs.push(dir);
    writeFileSync(join(dir, 'enrich.ts'), FUNCTION);
    const server = await startTestServer({ yaml: config(dir) });
    servers.push(server);
    const batch = ['A', 'Boom', 'Spin', 'Noise', 'Split', 'B'].map((event, i) => ({
      type: 'track',
      userId: 'u1',
      event,
      messageId: `fn-${i}`,
    }));
    const res = await server.app.inject({
      method: 'POST',
      url: '/v1/batch',
      headers: { authorization: basicAuth(WRITE_KEY) },
      payload: { batch },
    });
    expect(res.json()).toMatchObject({ accepted: 6, rejected: [] });
    await server.settle();

    const events = await server.query(
      `SELECT message_id, event, json_extract(payload, '$.properties.enriched') AS enriched FROM events ORDER BY message_id`,
    );
    expect(events.map((e) => [e.message_id, e.event, e.enriched])).toEqual([
      ['fn-0', 'A', 'true'],
      ['fn-4', 'Split', null],
      ['fn-4-1', 'Split Copy', null],
      ['fn-5', 'B', 'true'],
    ]);
    const failed = await server.query(
      `SELECT message_id, stage, code, reason, CAST(logs AS VARCHAR) AS logs FROM failed_events ORDER BY message_id`,
    );
    expect(failed.map((f) => [f.message_id, f.stage, f.code, JSON.parse(String(f.logs))])).toEqual([
      ['fn-1', 'transform', 'TRIB_ERR_TRANSFORM_THREW', ['log: saw Boom']],
      ['fn-2', 'transform', 'TRIB_ERR_TRANSFORM_TIMEOUT', ['log: saw Spin']],
    ]);
    expect(String(failed[0]!.reason)).toContain('transformation enrich: Error: no boom here');

    const stats = await server.app.inject({
      method: 'GET',
      url: '/admin/v1/stats',
      headers: { authorization: `Bearer ${ADMIN_TOKEN}` },
    });
    const web = (stats.json() as { sources: Record<string, unknown>[] }).sources[0]!;
    expect(web).toMatchObject({ received: 6, accepted: 6, passed: 4, failed: 2, blocked: 0, pending: 0 });
    expect(web.byStage).toEqual({
      load: { passed: 3 },
      transform: { failed: 2, filtered: 1 },
    });
  });

  it('the events a function makes of one record share its log offset, yet each keeps its own profile and rows', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'trib-fn-'));
    dirs.push(dir);
    writeFileSync(
      join(dir, 'enrich.ts'),
      `export default (e: { userId: string }) => [e, { ...e, userId: e.userId + '-twin', messageId: 'twin' }];`,
    );
    const server = await startTestServer({ yaml: config(dir) });
    servers.push(server);
    const res = await server.app.inject({
      method: 'POST',
      url: '/v1/track',
      headers: { authorization: basicAuth(WRITE_KEY) },
      payload: { userId: 'ada', event: 'Signed Up', messageId: 'one' },
    });
    expect(res.statusCode).toBe(200);
    await server.settle();
    await server.identity?.drained();
    await Promise.all(server.destinations.map((d) => d.drained()));

    const rows = await server.query(
      'SELECT message_id, user_id, profile_id, log_offset FROM events_with_profile ORDER BY message_id',
    );
    expect(rows.map((r) => [r.message_id, r.user_id])).toEqual([
      ['one', 'ada'],
      ['twin', 'ada-twin'],
    ]);
    expect(rows[0]!.log_offset).toBe(rows[1]!.log_offset);
    expect(rows[0]!.profile_id).not.toBe(rows[1]!.profile_id);
    const decisions = await server.query(
      'SELECT message_id, action FROM identity_decisions ORDER BY message_id',
    );
    expect(decisions).toEqual([
      { message_id: 'one', action: 'new' },
      { message_id: 'twin', action: 'new' },
    ]);
    const tracks = await server.query('SELECT id, user_id FROM web.tracks ORDER BY id');
    expect(tracks).toEqual([
      { id: 'one', user_id: 'ada' },
      { id: 'twin', user_id: 'ada-twin' },
    ]);
  });

  it('refuses to start with a function that does not load', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'trib-fn-'));
    dirs.push(dir);
    writeFileSync(join(dir, 'enrich.ts'), 'export const notDefault = 1;');
    await expect(startTestServer({ yaml: config(dir) })).rejects.toMatchObject({
      code: 'TRIB_ERR_TRANSFORM_INVALID',
    });
  });
});
