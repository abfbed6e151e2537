import { DuckDBInstance } from '@duckdb/node-api';
import { describe, expect, it } from 'vitest';
import type { FailedRow, StoreBatch } from '../store.js';
import { DuckDBStore } from './duckdb-store.js';

function batch(consumer: string, from: number, n: number): StoreBatch {
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

describe('DuckDBStore writes', () => {
  it('takes writes of several consumers at once in turn, each with its own offset', async () => {
    const instance = await DuckDBInstance.create(':memory:');
    const wh = await DuckDBStore.open(instance);
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

  it('loads ids and JSON holding newlines, quotes and tabs as they were sent', async () => {
    const instance = await DuckDBInstance.create(':memory:');
    const wh = await DuckDBStore.open(instance);
    try {
      const event = {
        type: 'page',
        name: 'Home\tpage',
        anonymousId: 'a\nb',
        messageId: 'm\n"1"',
        timestamp: '2026-01-01T00:00:00.000Z',
        receivedAt: '2026-01-01T00:00:01.000Z',
        properties: { note: 'line 1\nline 2' },
      };
      await wh.write({
        events: [
          // Pretty-printed: raw newlines between tokens.
          {
            messageId: event.messageId,
            sourceId: 's\n1',
            receivedAt: 0,
            logOffset: 7,
            json: JSON.stringify(event, null, 2),
          },
          {
            messageId: 'plain',
            sourceId: 'web',
            receivedAt: 0,
            logOffset: 8,
            json: JSON.stringify({ ...event, messageId: 'plain' }),
          },
        ],
        failed: [],
        consumer: 'warehouse',
        nextOffset: 9,
      });
      const r = await wh.query(
        'SELECT message_id, source_id, type, event, anonymous_id, log_offset, CAST(payload AS VARCHAR) AS payload FROM events ORDER BY log_offset',
      );
      expect(
        r.rows.map(({ payload, ...rest }) => ({ ...rest, payload: JSON.parse(String(payload)) })),
      ).toEqual([
        {
          message_id: 'm\n"1"',
          source_id: 's\n1',
          type: 'page',
          event: 'Home\tpage',
          anonymous_id: 'a\nb',
          log_offset: 7,
          payload: event,
        },
        {
          message_id: 'plain',
          source_id: 'web',
          type: 'page',
          event: 'Home\tpage',
          anonymous_id: 'a\nb',
          log_offset: 8,
          payload: { ...event, messageId: 'plain' },
        },
      ]);
      expect(await wh.consumerOffset('warehouse')).toBe(9);
    } finally {
      await wh.close();
      instance.closeSync();
    }
  });
});
