import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { type DuckDBConnection, DuckDBInstance } from '@duckdb/node-api';
import { afterEach, describe, expect, it } from 'vitest';
import { embeddedDuckDBOptions } from '../duckdb-options.js';
import { TributaryError } from '../errors.js';
import { DuckDBEventLog } from '../log/duckdb/duckdb-event-log.js';
import type { RawEvent } from '../log/event-log.js';
import { DuckDBWarehouse } from '../warehouse/duckdb/duckdb-warehouse.js';
import type { LogTableRange } from '../warehouse/warehouse.js';
import type { Stage } from './stages/stage.js';
import { WarehouseLoader } from './warehouse-loader.js';

const cleanups: (() => Promise<void>)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0)) await c();
});

/** The embedded log and warehouse in one instance, as the server opens them; tiny segments. */
async function openEmbedded() {
  const dir = mkdtempSync(join(tmpdir(), 'trib-logcopy-'));
  const instance = await DuckDBInstance.create(
    join(dir, 'warehouse.duckdb'),
    embeddedDuckDBOptions({ memoryLimit: '1GB' }),
  );
  const conn = await instance.connect();
  await conn.run(`ATTACH '${join(dir, 'log.duckdb')}' AS log`);
  const log = await DuckDBEventLog.open(instance, {
    segmentDir: join(dir, 'segments'),
    segmentBytes: 4000,
    pollIntervalMs: 20,
  });
  const maintenanceErrors: unknown[] = [];
  log.onMaintenanceError = (err) => maintenanceErrors.push(err);
  const warehouse = await DuckDBWarehouse.open(instance);
  cleanups.push(async () => {
    await log.close();
    await warehouse.close();
    conn.closeSync();
    instance.closeSync();
    rmSync(dir, { recursive: true, force: true });
  });
  return { conn, log, warehouse, maintenanceErrors };
}

/** A stage on the `shop` source that changes every event, so its events go as text. */
const tagShop: Stage = {
  name: 'tag',
  run(events) {
    for (const e of events) {
      e.event.properties = { ...(e.event.properties ?? {}), tagged: true };
      e.changed = true;
    }
    return { pass: events, drop: [], fail: [] };
  },
};

/** Receipt times of the scenario: recent (the dedupe window counts from them), the same in every run. */
const BASE = Date.now();

function ev(
  i: number,
  sourceId = 'web',
  messageId = `m-${i}`,
  extra: Record<string, unknown> = {},
): RawEvent {
  const receivedAt = BASE + i;
  const iso = new Date(receivedAt).toISOString();
  const event =
    i % 3 === 0
      ? { type: 'page', name: `Page ${i}`, anonymousId: `a-${i % 7}`, properties: { name: 'ignored' } }
      : {
          type: 'track',
          event: `Clicked \u00e4 ${i}`,
          userId: `u-${i % 5}`,
          properties: { note: 'x\ty\u001e' },
        };
  return {
    sourceId,
    messageId,
    receivedAt,
    status: 'accepted',
    json: JSON.stringify({ ...event, messageId, timestamp: iso, receivedAt: iso, ...extra }),
  };
}

/** The appends of the scenario: retries within and across appends, rejected records, a staged source. */
function appends(): RawEvent[][] {
  const out: RawEvent[][] = [];
  for (let a = 0; a < 12; a++) {
    const part: RawEvent[] = [];
    for (let i = a * 10; i < a * 10 + 10; i++) part.push(ev(i, i % 4 === 1 ? 'shop' : 'web'));
    part.push(ev(a * 10, 'web', `m-${a * 10}`)); // a retry within the append
    if (a > 0) part.push(ev(a * 10 - 5, 'web', `m-${a * 10 - 5}`)); // a retry of an earlier append
    part.push({ ...ev(1000 + a), status: 'rejected', code: 'TRIB_ERR_EVENT_MISSING_IDENTITY', reason: 'r' });
    out.push(part);
  }
  return out;
}

async function rows(conn: DuckDBConnection, sql: string): Promise<string[]> {
  const r = await conn.runAndReadAll(sql);
  return r.getRows().map((row) => JSON.stringify(row.map((v) => (v === null ? null : String(v)))));
}

async function load(
  logTables: ((log: DuckDBEventLog) => (from: number, to: number) => LogTableRange[]) | undefined,
) {
  const { conn, log, warehouse, maintenanceErrors } = await openEmbedded();
  const errors: unknown[] = [];
  let copies = 0;
  const tables = logTables?.(log);
  const loader = new WarehouseLoader(log, warehouse, {
    lingerMs: 0,
    maxBatch: 25,
    stages: new Map([['shop', [tagShop]]]),
    observer: { error: (e) => errors.push(e) },
    ...(tables && {
      logTables: (from: number, to: number) => {
        copies++;
        return tables(from, to);
      },
    }),
  });
  await loader.start();
  for (const part of appends()) await log.append(part);
  await loader.drained();
  await loader.stop();
  const events = await rows(
    conn,
    `SELECT message_id, source_id, type, event, user_id, anonymous_id, "timestamp", received_at, log_offset,
            CAST(payload AS VARCHAR) FROM events ORDER BY log_offset`,
  );
  const failed = await rows(
    conn,
    'SELECT log_offset, source_id, message_id, stage, code, reason, payload FROM failed_events ORDER BY log_offset',
  );
  return {
    events,
    failed,
    offset: await warehouse.consumerOffset('warehouse'),
    segments: log.segmentRanges().length,
    errors,
    maintenanceErrors,
    copies,
  };
}

describe('WarehouseLoader copying from the embedded log', () => {
  it('stores exactly the rows of the text path, across segments, with duplicates, rejected and staged records', async () => {
    const text = await load(undefined);
    const copy = await load((log) => (from, to) => log.tablesOf(from, to));
    const distinct = new Set(
      appends()
        .flat()
        .filter((r) => r.status === 'accepted')
        .map((r) => `${r.sourceId}/${r.messageId}`),
    );
    expect(text.events.length).toBe(distinct.size);
    expect(copy.copies).toBeGreaterThan(0);
    expect(copy.errors).toEqual([]);
    expect(copy.maintenanceErrors).toEqual([]);
    expect(copy.segments).toBeGreaterThan(3);
    expect(copy.events).toEqual(text.events);
    expect(copy.failed).toEqual(text.failed);
    expect(copy.failed).toHaveLength(12);
    expect(copy.offset).toBe(text.offset);
    // The staged source's events went through the stage, the others as the log holds them.
    expect(copy.events.filter((r) => r.includes('"shop"')).every((r) => r.includes('tagged'))).toBe(true);
    expect(copy.events.some((r) => r.includes('"web"') && r.includes('tagged'))).toBe(false);
  });

  it('loads the batch as text when the copy gives another count, and reports it', async () => {
    const text = await load(undefined);
    // Tables that hold none of the range: every copy counts 0 rows.
    const wrong = await load(() => () => []);
    expect(wrong.copies).toBeGreaterThan(0);
    expect(wrong.errors.length).toBeGreaterThan(0);
    expect(
      wrong.errors.every((e) => e instanceof TributaryError && e.code === 'TRIB_ERR_STATE_LOG_COPY_MISMATCH'),
    ).toBe(true);
    expect(wrong.events).toEqual(text.events);
    expect(wrong.failed).toEqual(text.failed);
    expect(wrong.offset).toBe(text.offset);
  });
});
