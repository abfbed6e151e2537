import { DuckDBInstance } from '@duckdb/node-api';
import { describe, expect, it } from 'vitest';
import type { FailedRow, WarehouseBatch } from '../warehouse.js';
import { DuckDBWarehouse } from './duckdb-warehouse.js';

function batch(consumer: string, from: number, n: number): WarehouseBatch {
  const failed: FailedRow[] = [];
  for (let i = 0; i < n; i++) {
    failed.push({
      logOffset: from + i,
      sourceId: 'web',
      messageId: `${consumer}-${i}`,
      stage: consumer,
      code: 'TRIB_ERR_TRANSFORM_THREW',
      reason: 'x',
      receivedAt: '2026-01-01T00:00:00Z',
      json: '{}',
    });
  }
  return {
    events: [
      {
        messageId: `${consumer}-e`,
        sourceId: 'web',
        receivedAt: Date.UTC(2026, 0, 1),
        logOffset: from,
        json: JSON.stringify({
          type: 'track',
          event: 'x',
          anonymousId: 'a',
          messageId: `${consumer}-e`,
          timestamp: '2026-01-01T00:00:00.000Z',
          receivedAt: '2026-01-01T00:00:00.000Z',
        }),
      },
    ],
    failed,
    consumer,
    nextOffset: from + n,
  };
}

describe('DuckDBWarehouse writes', () => {
  it('takes writes of several consumers at once in turn, each with its own offset', async () => {
    const instance = await DuckDBInstance.create(':memory:');
    const wh = await DuckDBWarehouse.open(instance);
    try {
      // The loader and a destination's failure writes share one writer connection.
      await Promise.all([
        wh.write(batch('warehouse', 0, 50)),
        wh.write(batch('transform:a', 100, 30)),
        wh.write(batch('transform:b', 200, 20)),
      ]);
      const r = await wh.query('SELECT stage, count(*) AS n FROM failed_events GROUP BY 1 ORDER BY 1');
      expect(r.rows).toEqual([
        { stage: 'transform:a', n: 30 },
        { stage: 'transform:b', n: 20 },
        { stage: 'warehouse', n: 50 },
      ]);
      expect((await wh.query('SELECT count(*) AS n FROM events')).rows).toEqual([{ n: 3 }]);
      expect(await wh.consumerOffset('warehouse')).toBe(50);
      expect(await wh.consumerOffset('transform:a')).toBe(130);
      expect(await wh.consumerOffset('transform:b')).toBe(220);
    } finally {
      await wh.close();
      instance.closeSync();
    }
  });
});
