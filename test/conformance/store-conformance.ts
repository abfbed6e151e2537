import { afterEach, describe, expect, it } from 'vitest';
import type { EventRow, FailedRow, Store } from '../../src/store/store.js';

/**
 * The suite every adapter of the `Store` port (the internal event store the loader
 * writes) must pass: DuckDB, PostgreSQL, and a PostgreSQL partition view.
 */
export interface StoreHarness {
  /** A store on empty storage. */
  open(): Promise<Store>;
  /** Rows of a query on the storage (`events`, `failed_events` unqualified), values as text. */
  query(sql: string): Promise<Record<string, string | null>[]>;
  cleanup(): Promise<void>;
}

const T0 = Date.UTC(2026, 10, 20, 10);

/** An accepted event's row, its JSON built from `event` (the server-side fields added). */
export function eventRow(offset: number, event: Record<string, unknown> = {}, raw?: string): EventRow {
  const messageId = `m-${offset}`;
  const at = new Date(T0 + offset).toISOString();
  return {
    messageId,
    sourceId: 'web',
    receivedAt: T0 + offset,
    logOffset: offset,
    json:
      raw ??
      JSON.stringify({
        type: 'track',
        event: 'E',
        userId: 'u1',
        messageId,
        timestamp: at,
        receivedAt: at,
        ...event,
      }),
  };
}

export function storeConformance(name: string, makeHarness: () => Promise<StoreHarness> | undefined) {
  describe(`event store conformance: ${name}`, () => {
    let h: StoreHarness | undefined;
    let store: Store | undefined;
    afterEach(async () => {
      await store?.close().catch(() => undefined);
      store = undefined;
      await h?.cleanup();
      h = undefined;
    });
    async function open() {
      h = (await makeHarness())!;
      store = await h.open();
      return store;
    }

    it('stores the rows it can and fails the ones the engine refuses, moving the offset', async () => {
      const s = await open();
      const events = [
        eventRow(0),
        // A lone surrogate: JavaScript holds it, JSON.stringify escapes it, engines refuse it.
        eventRow(1, { properties: { s: '\ud800' } }),
        eventRow(2),
        eventRow(3, { timestamp: '2020-02-30T00:00:00.000Z' }),
        eventRow(4, { timestamp: '+300000-01-01T00:00:00.000Z' }),
        eventRow(5, { type: null }),
        eventRow(6),
      ];
      const report = await s.write({ events, failed: [], consumer: 'loader', nextOffset: 7, fromOffset: 0 });
      expect(report.refused.map((r) => r.index)).toEqual([1, 3, 4, 5]);
      expect(report.refused.every((r) => r.reason.length > 0)).toBe(true);
      expect(report.duplicates).toEqual([]);
      expect((await s.readEvents(0, 100, 100)).map((e) => e.logOffset)).toEqual([0, 2, 6]);
      expect(await s.consumerOffset('loader')).toBe(7);
      const failed = await h!.query(
        'SELECT CAST(log_offset AS VARCHAR) AS o, stage, code, reason, CAST(payload AS VARCHAR) AS p FROM failed_events ORDER BY log_offset',
      );
      expect(failed.map((f) => [f.o, f.stage, f.code])).toEqual([
        ['1', 'load', 'TRIB_ERR_LOAD_UNSTORABLE'],
        ['3', 'load', 'TRIB_ERR_LOAD_UNSTORABLE'],
        ['4', 'load', 'TRIB_ERR_LOAD_UNSTORABLE'],
        ['5', 'load', 'TRIB_ERR_LOAD_UNSTORABLE'],
      ]);
      // The payload is kept, made storable: the surrogate is U+FFFD.
      expect(JSON.parse(failed[0]!.p!).properties.s).toBe('\ufffd');
      expect(JSON.parse(failed[1]!.p!).timestamp).toBe('2020-02-30T00:00:00.000Z');

      // The next batch loads as usual.
      const next = await s.write({
        events: [eventRow(7)],
        failed: [],
        consumer: 'loader',
        nextOffset: 8,
        fromOffset: 7,
      });
      expect(next.refused).toEqual([]);
      expect((await s.readEvents(7, 100, 100)).map((e) => e.logOffset)).toEqual([7]);
    });

    it('fails a payload that is not JSON at all, and a batch that is all bad', async () => {
      const s = await open();
      const report = await s.write({
        events: [
          eventRow(0, {}, '{"type":"track"'),
          eventRow(1, {}, 'not json'),
          eventRow(2, { timestamp: 'never' }),
        ],
        failed: [],
        consumer: 'loader',
        nextOffset: 3,
      });
      expect(report.refused.map((r) => r.index)).toEqual([0, 1, 2]);
      expect(await s.consumerOffset('loader')).toBe(3);
      const failed = await h!.query(
        'SELECT CAST(payload AS VARCHAR) AS p FROM failed_events ORDER BY log_offset',
      );
      expect(failed.map((f) => JSON.parse(f.p!))).toEqual([
        '{"type":"track"',
        'not json',
        expect.objectContaining({ timestamp: 'never' }),
      ]);
    });

    it('stores failed rows whose payload or texts hold lone surrogates or U+0000', async () => {
      const s = await open();
      const bad: FailedRow = {
        logOffset: 0,
        sourceId: 'web',
        messageId: 'x\udc00',
        stage: 'collect',
        code: 'TRIB_ERR_EVENT_INVALID_FIELD',
        reason: 'bad \ud800 field\u0000',
        receivedAt: new Date(T0).toISOString(),
        json: JSON.stringify({ type: 'track', s: '\ud800', n: 'a\u0000b', '\udfff': 1 }),
      };
      const report = await s.write({
        events: [eventRow(1)],
        failed: [bad],
        consumer: 'loader',
        nextOffset: 2,
      });
      expect(report.refused).toEqual([]);
      const failed = await h!.query(
        'SELECT message_id AS m, CAST(payload AS VARCHAR) AS p FROM failed_events',
      );
      expect(failed).toHaveLength(1);
      expect(failed[0]!.m).toBe('x\ufffd');
      expect(JSON.parse(failed[0]!.p!)).toMatchObject({ s: '\ufffd', n: 'a\ufffdb', '\ufffd': 1 });
      expect((await s.readEvents(0, 100, 100)).map((e) => e.logOffset)).toEqual([1]);
    });
    it('lists, shows, picks for retry and marks failed events through typed methods', async () => {
      const s = await open();
      const failedRow = (offset: number, stage: string, code: string, retryOf?: string): FailedRow => ({
        logOffset: offset,
        sourceId: offset % 2 === 0 ? 'web' : 'app',
        messageId: `f-${offset}`,
        stage,
        code,
        reason: `why ${offset}`,
        receivedAt: new Date(T0 + offset).toISOString(),
        json: JSON.stringify({ type: 'track', event: 'E', userId: 'u1', messageId: `f-${offset}` }),
        logs: offset === 2 ? ['line 1', "it's \\ quoted"] : undefined,
        retryOf,
      });
      await s.write({
        events: [],
        failed: [
          failedRow(1, 'plan', 'TRIB_ERR_PLAN_VIOLATION'),
          failedRow(2, 'transform', 'TRIB_ERR_TRANSFORM_FAILED'),
          failedRow(3, 'collect', 'TRIB_ERR_EVENT_MISSING_IDENTITY'),
        ],
        consumer: 'loader',
        nextOffset: 4,
      });
      const all = await s.listFailed({});
      expect(all.map((f) => [f.message_id, f.source_id, f.stage, f.retry_state])).toEqual([
        ['f-3', 'app', 'collect', 'new'],
        ['f-2', 'web', 'transform', 'new'],
        ['f-1', 'app', 'plan', 'new'],
      ]);
      expect((await s.listFailed({ source: 'app' })).map((f) => f.message_id)).toEqual(['f-3', 'f-1']);
      expect((await s.listFailed({ stage: 'plan' })).map((f) => f.message_id)).toEqual(['f-1']);
      expect(await s.listFailed({ code: "x' OR '1'='1" })).toEqual([]);
      expect((await s.listFailed({ limit: 1 })).map((f) => f.message_id)).toEqual(['f-3']);

      const id2 = all.find((f) => f.message_id === 'f-2')!.id;
      const detail = await s.failedById(id2);
      expect(detail).toMatchObject({
        id: id2,
        log_offset: 2,
        stage: 'transform',
        reason: 'why 2',
        retry_state: 'new',
      });
      expect(JSON.parse(detail!.payload)).toMatchObject({ messageId: 'f-2' });
      expect(JSON.parse(detail!.logs!)).toEqual(['line 1', "it's \\ quoted"]);
      expect(await s.failedById("no-such-id' OR '1'='1")).toBeUndefined();

      const picked = await s.failedToRetry({ source: 'web' });
      // The payload as the engine keeps it: PostgreSQL's jsonb spaces its text.
      expect(picked.map(({ json, ...rest }) => ({ ...rest, event: JSON.parse(json) }))).toEqual([
        {
          id: id2,
          logOffset: 2,
          sourceId: 'web',
          messageId: 'f-2',
          stage: 'transform',
          code: 'TRIB_ERR_TRANSFORM_FAILED',
          receivedAt: T0 + 2,
          event: { type: 'track', event: 'E', userId: 'u1', messageId: 'f-2' },
        },
      ]);
      expect((await s.failedToRetry({ ids: all.map((f) => f.id) })).map((f) => f.logOffset)).toEqual([
        1, 2, 3,
      ]);

      await s.markRetried([id2]);
      await s.markRetried([]);
      expect((await s.listFailed({})).map((f) => f.message_id)).toEqual(['f-3', 'f-1']);
      expect((await s.listFailed({ includeRetried: true })).find((f) => f.id === id2)!.retry_state).toBe(
        'retried',
      );
      expect((await s.failedById(id2))!.retried_at).not.toBeNull();
      expect(await s.failedToRetry({ ids: [id2] })).toEqual([]);

      // The retry failed again: a new row names the first in retry_of.
      await s.write({
        events: [],
        failed: [failedRow(5, 'transform', 'TRIB_ERR_TRANSFORM_FAILED', id2)],
        consumer: 'loader',
        nextOffset: 6,
      });
      const again = await s.retriesOf([id2, 'other']);
      const newId = (await s.listFailed({ stage: 'transform' })).find((f) => f.message_id === 'f-5')!.id;
      expect([...again]).toEqual([[id2, newId]]);
      expect(await s.retriesOf([])).toEqual(new Map());
    });
  });
}
