import { DuckDBInstance } from '@duckdb/node-api';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { StoredEvent } from '../store/store.js';
import { DuckDBEngine } from './warehouse/duckdb/duckdb-engine.js';
import { SegmentWarehouse } from './warehouse/segment-warehouse.js';

/**
 * For any JSON properties and traits (strings of any UTF-16 code units, lone surrogates
 * included), a destination stores the event or reports it refused, and the events around it
 * are loaded with the offset: one event never stops a load.
 */

let instance: DuckDBInstance;
beforeAll(async () => {
  instance = await DuckDBInstance.create(':memory:');
});
afterAll(() => instance.closeSync());

const AT = '2026-11-20T10:00:00.000Z';
function event(offset: number, id: string, fields: Record<string, unknown>): StoredEvent {
  return {
    logOffset: offset,
    sourceId: 'web',
    messageId: id,
    receivedAt: Date.parse(AT),
    json: JSON.stringify({ messageId: id, userId: 'u1', timestamp: AT, receivedAt: AT, ...fields }),
  };
}

// Any UTF-16 code units, with the ones engines choke on (lone surrogates, NUL) made likely.
const anyText = fc.oneof(
  fc.string({ unit: 'binary', maxLength: 12 }),
  fc.constantFrom('\ud800', 'x\udfff', '\u0000', '\udbff\udbff'),
);
const anyJson = fc.letrec((tie) => ({
  value: fc.oneof(
    { depthSize: 'small' },
    fc.constant(null),
    fc.boolean(),
    fc.double(),
    fc.integer(),
    anyText,
    fc.array(tie('value'), { maxLength: 3 }),
    fc.dictionary(anyText, tie('value'), { maxKeys: 3 }),
  ),
})).value;

describe('loadIsolated on DuckDB', () => {
  it('stores or refuses any event, and loads the events around it', async () => {
    let n = 0;
    await fc.assert(
      fc.asyncProperty(
        fc.constantFrom('track', 'identify'),
        fc.dictionary(anyText, anyJson, { maxKeys: 4 }),
        fc.array(anyText, { minLength: 1, maxLength: 3 }),
        async (type, fields, list) => {
          const catalog = `iso_${n++}`;
          const c = await instance.connect();
          await c.run(`ATTACH ':memory:' AS ${catalog}`);
          const w = new SegmentWarehouse({ name: 'wh', engine: new DuckDBEngine(instance, { catalog }) });
          try {
            const odd = event(1, 'odd', {
              type,
              event: 'E',
              [type === 'track' ? 'properties' : 'traits']: { ...fields, list },
            });
            const result = await w.load(
              [
                event(0, 'before', { type: 'track', event: 'E' }),
                odd,
                event(2, 'after', { type: 'track', event: 'E' }),
              ],
              3,
            );
            expect(result.status).toBe('ok');
            if (result.status === 'ok') expect(result.failed.every((f) => f.event === odd)).toBe(true);
            const ids = await c.runAndReadAll(`SELECT id FROM ${catalog}.web.tracks ORDER BY id`);
            const stored = ids.getRows().map(([id]) => String(id));
            expect(stored.filter((id) => id !== 'odd')).toEqual(['after', 'before']);
            expect(await w.storedOffset()).toBe(3);
          } finally {
            await w.close();
            await c.run(`DETACH ${catalog}`);
            c.closeSync();
          }
        },
      ),
      { numRuns: 60 },
    );
  });
});
