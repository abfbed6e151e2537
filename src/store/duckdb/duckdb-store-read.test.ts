import { DuckDBInstance, DuckDBTimestampTZValue } from '@duckdb/node-api';
import { afterEach, describe, expect, it } from 'vitest';
import type { EventRow } from '../store.js';
import { DuckDBStore } from './duckdb-store.js';

const open: DuckDBInstance[] = [];
afterEach(() => {
  for (const i of open.splice(0)) i.closeSync();
});

/** Message ids that a line-based transfer could trip over. */
const AWKWARD = [
  'plain',
  'back\\slash',
  'quote"d',
  'tab\there',
  'line\nbreak',
  'separators\u001e\u001fin an id',
  'emoji 🧪 and ü',
  '',
];

function row(logOffset: number, messageId: string, extra: Record<string, unknown> = {}): EventRow {
  const at = new Date(Date.UTC(2026, 0, 1) + logOffset * 1000).toISOString();
  return {
    logOffset,
    messageId,
    sourceId: logOffset % 2 === 0 ? 'web' : 'src\\"odd',
    receivedAt: Date.parse(at),
    json: JSON.stringify({
      type: 'track',
      event: 'x',
      anonymousId: 'a',
      messageId,
      timestamp: at,
      receivedAt: at,
      ...extra,
    }),
  };
}

async function warehouseWith(rows: EventRow[]) {
  const instance = await DuckDBInstance.create(':memory:');
  open.push(instance);
  const wh = await DuckDBStore.open(instance);
  await wh.write({ events: rows, failed: [], consumer: 'warehouse', nextOffset: rows.length + 10 });
  return wh;
}

describe('DuckDBStore.readEvents', () => {
  it('gives back every field exactly, whatever characters the ids and payload hold', async () => {
    const rows = AWKWARD.map((m, i) =>
      row(i, m, { properties: { text: `multi\nline\ttext \u0001 ${m}`, nested: { deep: [1, 'two'] } } }),
    );
    const wh = await warehouseWith(rows);
    const read = await wh.readEvents(0, 100, 1000);
    expect(read.map((e) => ({ ...e, json: JSON.parse(e.json) }))).toEqual(
      rows.map((r) => ({ ...r, json: JSON.parse(r.json) })),
    );
    await wh.close();
  });

  it('reads [from, to) in log order, at most `limit` events, cutting inside an offset as a LIMIT would', async () => {
    // Offsets 0..9, where offset 4 holds three events (a transformation's output).
    const rows: EventRow[] = [];
    for (let o = 0; o < 10; o++) {
      const n = o === 4 ? 3 : 1;
      for (let k = 0; k < n; k++) rows.push(row(o, `m-${o}-${k}`));
    }
    const wh = await warehouseWith(rows);
    const ids = async (from: number, to: number, limit: number) =>
      (await wh.readEvents(from, to, limit)).map((e) => e.messageId);
    expect(await ids(0, 100, 100)).toEqual(rows.map((r) => r.messageId));
    expect(await ids(2, 6, 100)).toEqual(['m-2-0', 'm-3-0', 'm-4-0', 'm-4-1', 'm-4-2', 'm-5-0']);
    expect(await ids(0, 100, 3)).toEqual(['m-0-0', 'm-1-0', 'm-2-0']);
    const cut = await ids(2, 100, 4);
    expect(cut).toHaveLength(4);
    expect(cut.slice(0, 3)).toEqual(['m-2-0', 'm-3-0', cut[2]]);
    expect(cut.slice(2).every((m) => m.startsWith('m-4-'))).toBe(true);
    expect(await ids(50, 100, 10)).toEqual([]);
    expect(await ids(3, 3, 10)).toEqual([]);
    await wh.close();
  });

  it('still reads a row whose payload holds a raw separator, value by value', async () => {
    // The warehouse's own writes refuse such text (it is not valid JSON), but an appender of
    // another tool does not check: the batch is then read row by row, not as one text.
    const rows = [row(0, 'a'), row(2, 'c')];
    const wh = await warehouseWith(rows);
    const odd = row(1, 'b');
    const json = odd.json.replace('"x"', '"x\u001ey\u001fz"');
    const c = await open[0]!.connect();
    const a = await c.createAppender('events');
    for (const v of [odd.messageId, odd.sourceId, 'track', 'x', null, 'a']) {
      if (v === null) a.appendNull();
      else a.appendVarchar(v);
    }
    a.appendTimestampTZ(new DuckDBTimestampTZValue(BigInt(odd.receivedAt) * 1000n));
    a.appendTimestampTZ(new DuckDBTimestampTZValue(BigInt(odd.receivedAt) * 1000n));
    a.appendBigInt(1n);
    a.appendVarchar(json);
    a.endRow();
    a.flushSync();
    a.closeSync();
    c.closeSync();
    expect(await wh.readEvents(0, 10, 10)).toEqual([rows[0], { ...odd, json }, rows[1]]);
    await wh.close();
  });

  it('reads a batch larger than one DuckDB vector', async () => {
    const rows = Array.from({ length: 5_000 }, (_, i) => row(i, `m-${i}`));
    const wh = await warehouseWith(rows);
    const read = await wh.readEvents(100, 4_900, 4_500);
    expect(read.map((e) => e.logOffset)).toEqual(Array.from({ length: 4_500 }, (_, i) => 100 + i));
    expect(read.every((e, i) => e.json === rows[100 + i]!.json)).toBe(true);
    await wh.close();
  });
});
