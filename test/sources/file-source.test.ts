import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';
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
    server = await startTestServer({
      yaml: yaml(`      - name: things
        path: ${join(dir, '*.jsonl.gz')}
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
    ]);
  });
});
