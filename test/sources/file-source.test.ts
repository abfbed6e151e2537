import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';
import { DuckDBInstance } from '@duckdb/node-api';
import { afterEach, describe, expect, it } from 'vitest';
import { startTestServer, type TestServer } from '../helpers.js';

let server: TestServer | undefined;
let dir: string | undefined;
afterEach(async () => {
  await server?.stop();
  server = undefined;
  if (dir) rmSync(dir, { recursive: true, force: true });
  dir = undefined;
});

function yaml(streams: string): string {
  return `version: 1
sources:
  - id: web
    type: http
    writeKey: wk_web_123
  - id: helpdesk
    type: file
    streams:
${streams}`;
}

describe('file source end to end', () => {
  it('imports a CSV as objects and events, isolating bad rows with file and line', async () => {
    dir = mkdtempSync(join(tmpdir(), 'trib-file-'));
    const csv = join(dir, 'tickets.csv');
    writeFileSync(
      csv,
      '\uFEFFid;email;subject;opened_at\n1;ada@example.com;"Login\nbroken";2026-01-02T10:00:00Z\n2;bob@example.com;Refund;not-a-date\n3;cy@example.com;Too;many;fields\n4;dee@example.com;Slow;2026-01-03T09:00:00Z\n',
    );
    server = await startTestServer({
      yaml: yaml(`      - name: tickets
        path: ${csv}
        delimiter: ";"
        primaryKey: [id]
        columns: { id: integer, opened_at: timestamp }
        events:
          type: track
          event: Ticket Opened
          anonymousId: email
          timestamp: opened_at
          properties: [subject]
        identifiers: { email: email }
`),
    });
    const r = await server.sources.sync('helpdesk', { trigger: 'test' });
    expect(r.status, r.error).toBe('succeeded');
    expect(r).toMatchObject({ rows: 4, objects: 2, failed: 2, events: 4 });
    await server.settle();
    const rows = await server.query(
      'SELECT id, email, subject, CAST(opened_at AS VARCHAR) AS t FROM helpdesk.tickets ORDER BY id',
    );
    expect(rows).toEqual([
      { id: 1, email: 'ada@example.com', subject: 'Login\nbroken', t: '2026-01-02 10:00:00+00' },
      { id: 4, email: 'dee@example.com', subject: 'Slow', t: '2026-01-03 09:00:00+00' },
    ]);
    const failed = await server.query(
      "SELECT code, reason FROM failed_events WHERE stage = 'source' ORDER BY reason",
    );
    expect(failed).toEqual([
      {
        code: 'TRIB_ERR_SOURCE_BAD_VALUE',
        reason: expect.stringMatching(/tickets\.csv:4: column opened_at: "not-a-date" is not a timestamp/),
      },
      {
        code: 'TRIB_ERR_SOURCE_BAD_ROW',
        reason: expect.stringMatching(/tickets\.csv:5: expected 4 fields, found 5/),
      },
    ]);
    const events = await server.query(
      "SELECT type, event, anonymous_id FROM events WHERE source_id = 'helpdesk' ORDER BY type, anonymous_id",
    );
    expect(events).toEqual([
      { type: 'identify', event: null, anonymous_id: 'helpdesk:tickets:[1]' },
      { type: 'identify', event: null, anonymous_id: 'helpdesk:tickets:[4]' },
      { type: 'track', event: 'Ticket Opened', anonymous_id: 'ada@example.com' },
      { type: 'track', event: 'Ticket Opened', anonymous_id: 'dee@example.com' },
    ]);
    // A second sync reads nothing: the file is done.
    const again = await server.sources.sync('helpdesk', { trigger: 'test' });
    expect(again).toMatchObject({ status: 'succeeded', rows: 0, objects: 0, events: 0 });
  });

  it('reads gzipped JSONL and keeps the rows before a truncation', async () => {
    dir = mkdtempSync(join(tmpdir(), 'trib-file-'));
    const lines = Array.from({ length: 2000 }, (_, i) =>
      JSON.stringify({ id: i, name: `n${i}`, tags: ['a'] }),
    ).join('\n');
    const gz = gzipSync(Buffer.from(lines));
    writeFileSync(join(dir, 'a.jsonl.gz'), gz.subarray(0, Math.floor(gz.length / 2)));
    writeFileSync(join(dir, 'b.jsonl.gz'), gzipSync(Buffer.from('{"id": 5000}\nnot json\n[1]\n')));
    // A CSV gzip cut short: its rows before the cut are kept, and it fails once.
    const rows = Array.from({ length: 3000 }, (_, i) => `${10_000 + i},x${i}`).join('\n');
    const csvGz = gzipSync(Buffer.from(`id,name\n${rows}\n`));
    writeFileSync(join(dir, 'c.csv.gz'), csvGz.subarray(0, Math.floor(csvGz.length / 2)));
    server = await startTestServer({
      yaml: yaml(`      - name: things
        path: ${join(dir, '*.jsonl.gz')}
        primaryKey: [id]
      - name: cut
        path: ${join(dir, '*.csv.gz')}
        primaryKey: [id]
`),
    });
    const r = await server.sources.sync('helpdesk', { trigger: 'test' });
    expect(r.status, r.error).toBe('succeeded');
    const [{ n }] = (await server.query('SELECT count(*) AS n FROM helpdesk.things')) as [{ n: number }];
    expect(n).toBeGreaterThan(0);
    expect(n).toBeLessThan(2001);
    const failed = await server.query("SELECT code FROM failed_events WHERE stage = 'source' ORDER BY code");
    expect(failed.map((f) => f.code)).toEqual([
      'TRIB_ERR_SOURCE_BAD_ROW',
      'TRIB_ERR_SOURCE_BAD_ROW',
      'TRIB_ERR_SOURCE_FILE_TRUNCATED',
      'TRIB_ERR_SOURCE_FILE_TRUNCATED',
    ]);
    const [{ cut }] = (await server.query('SELECT count(*) AS cut FROM helpdesk.cut')) as [{ cut: number }];
    expect(cut).toBeGreaterThan(0);
    expect(cut).toBeLessThan(3000);
    // Damaged files are done: the next sync reads nothing again.
    expect(await server.sources.sync('helpdesk', { trigger: 'test' })).toMatchObject({
      status: 'succeeded',
      rows: 0,
    });
  });

  it('syncs on its schedule (croner), one run at a time', async () => {
    dir = mkdtempSync(join(tmpdir(), 'trib-file-'));
    writeFileSync(join(dir, 'a.csv'), 'id,name\n1,one\n');
    server = await startTestServer({
      yaml: `${yaml(`      - name: things
        path: ${join(dir, '*.csv')}
        primaryKey: [id]
`)}    schedule: "* * * * * *"
`,
    });
    const s = server;
    const scheduled = async () =>
      (await s.sources.runner.runs('helpdesk')).filter(
        (r) => r.trigger === 'schedule' && r.status !== 'running',
      );
    while ((await scheduled()).length < 2) await new Promise((r) => setTimeout(r, 100));
    const runs = await scheduled();
    expect(runs.at(-1)).toMatchObject({ status: 'succeeded', rows: 1, objects: 1 });
    expect(runs[0]).toMatchObject({ status: 'succeeded', rows: 0 });
    expect(await server.query('SELECT id, name FROM helpdesk.things')).toEqual([{ id: '1', name: 'one' }]);
  });

  it('reads Parquet through DuckDB, with its column types, and resumes after the rows it committed', async () => {
    dir = mkdtempSync(join(tmpdir(), 'trib-file-'));
    const file = join(dir, 'orders.parquet');
    const instance = await DuckDBInstance.create(':memory:');
    const c = await instance.connect();
    await c.run(
      `COPY (SELECT i AS id, 'user' || i || '@example.com' AS email, i * 1.5 AS amount,
             TIMESTAMPTZ '2026-01-01 00:00:00+00' + to_seconds(i) AS at FROM range(1, 45001) t(i))
       TO '${file}' (FORMAT parquet)`,
    );
    c.closeSync();
    instance.closeSync();
    server = await startTestServer({
      yaml: yaml(`      - name: orders
        path: ${file}
        primaryKey: [id]
`),
    });
    let commits = 0;
    const crashing = server.sources.runner.fork({
      afterAppend: () => {
        if (++commits === 2) throw new Error('stopped');
      },
    });
    const stopped = await crashing.sync(
      { ...server.sources.pull('helpdesk'), retries: 0 },
      { trigger: 'test' },
    );
    expect(stopped.status).toBe('failed');
    const r = await server.sources.sync('helpdesk', { trigger: 'test' });
    expect(r, r.error).toMatchObject({ status: 'succeeded', rows: 25_000 });
    expect(
      await server.query(
        'SELECT count(*) AS n, count(DISTINCT id) AS ids, sum(amount) AS total, min("at") AS first FROM helpdesk.orders',
      ),
    ).toEqual([
      { n: 45_000, ids: 45_000, total: (45_000 * 45_001 * 1.5) / 2, first: '2026-01-01 00:00:01+00' },
    ]);
    const [{ t }] = (await server.query(
      "SELECT data_type AS t FROM information_schema.columns WHERE table_schema = 'helpdesk' AND column_name = 'at'",
    )) as [{ t: string }];
    expect(t).toBe('TIMESTAMP WITH TIME ZONE');
  });
});
