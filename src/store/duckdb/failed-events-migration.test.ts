import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DuckDBInstance } from '@duckdb/node-api';
import { afterEach, describe, expect, it } from 'vitest';
import { DuckDBStore } from './duckdb-store.js';

const dirs: string[] = [];
afterEach(() => {
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});

describe('failed_events of an earlier release', () => {
  it('gains the failed-event store columns, its rows an id and the state new', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'trib-migrate-'));
    dirs.push(dir);
    const instance = await DuckDBInstance.create(join(dir, 'w.duckdb'));
    const c = await instance.connect();
    await c.run(`CREATE TABLE failed_events (log_offset BIGINT NOT NULL, source_id VARCHAR NOT NULL,
      message_id VARCHAR, stage VARCHAR NOT NULL, code VARCHAR NOT NULL, reason VARCHAR NOT NULL,
      received_at TIMESTAMPTZ NOT NULL, payload JSON NOT NULL)`);
    await c.run(`INSERT INTO failed_events VALUES (7, 'web', 'm1', 'collect', 'TRIB_ERR_EVENT_NOT_OBJECT', 'r',
      '2026-01-01T00:00:00Z', '1')`);
    c.closeSync();
    const wh = await DuckDBStore.open(instance);
    await wh.write({
      events: [],
      failed: [
        {
          logOffset: 8,
          sourceId: 'web',
          messageId: 'm2',
          stage: 'transform',
          code: 'TRIB_ERR_TRANSFORM_THREW',
          reason: 'x',
          receivedAt: '2026-01-01T00:00:01Z',
          json: '{}',
          logs: ['log: hi'],
          retryOf: 'abc',
        },
      ],
      consumer: 'warehouse',
      nextOffset: 9,
    });
    const r = await wh.query(
      `SELECT log_offset, id IS NOT NULL AS has_id, failed_at IS NOT NULL AS has_time, retry_state, retry_of,
              CAST(logs AS VARCHAR) AS logs FROM failed_events ORDER BY log_offset`,
    );
    expect(r.rows).toEqual([
      { log_offset: 7, has_id: true, has_time: true, retry_state: 'new', retry_of: null, logs: null },
      {
        log_offset: 8,
        has_id: true,
        has_time: true,
        retry_state: 'new',
        retry_of: 'abc',
        logs: '["log: hi"]',
      },
    ]);
    await wh.close();
    instance.closeSync();
  });
});
