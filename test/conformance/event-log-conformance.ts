import { afterEach, describe, expect, it } from 'vitest';
import type { Delivered, EventLog, RawEvent } from '../../src/log/event-log.js';

/** What an adapter under test provides: a fresh log, and the same log opened again. */
export interface EventLogHarness {
  /**
   * The adapter gives each append consecutive offsets, and concurrent appends disjoint
   * consecutive ranges (the embedded log). The port promises less (unique offsets, increasing
   * within an append); with this flag the suite checks the stronger property too.
   */
  contiguousOffsets?: boolean;
  open(): Promise<EventLog>;
  /** Closes `log` and opens the same storage again, as a restart would. */
  reopen(log: EventLog): Promise<EventLog>;
  cleanup(): Promise<void>;
}

export function record(i: number, sourceId = 'web'): RawEvent {
  return {
    sourceId,
    messageId: `m-${i}`,
    receivedAt: 1_790_000_000_000 + i,
    status: 'accepted',
    json: JSON.stringify({ type: 'track', event: 'E', userId: `u${i}`, messageId: `m-${i}`, n: i }),
  };
}

async function collect(
  log: EventLog,
  group: string,
  expected: number,
  fail?: { times: number },
  from?: number,
): Promise<Delivered[]> {
  const got: Delivered[] = [];
  let failures = 0;
  const sub = log.consume(
    group,
    async (batch) => {
      if (fail && failures < fail.times) {
        failures++;
        throw new Error('handler failure');
      }
      got.push(...batch);
    },
    from === undefined ? {} : { from },
  );
  const deadline = Date.now() + 10_000;
  while (got.length < expected && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10));
  await sub.stop();
  return got;
}

/**
 * The contract every EventLog adapter must meet. Run it with the adapter's harness:
 * `eventLogConformance('duckdb', harness)`.
 */
export function eventLogConformance(name: string, makeHarness: () => EventLogHarness): void {
  describe(`EventLog conformance: ${name}`, () => {
    let harness: EventLogHarness;
    let log: EventLog | undefined;

    async function fresh() {
      harness = makeHarness();
      log = await harness.open();
      return log;
    }
    afterEach(async () => {
      await log?.close().catch(() => undefined);
      log = undefined;
      await harness?.cleanup();
    });

    it('has an identity, kept across a restart, that another log does not share', async () => {
      const l = await fresh();
      const id = l.id;
      expect(id).toMatch(/\S{8,}/);
      log = await harness.reopen(l);
      expect(log.id).toBe(id);
      const other = makeHarness();
      const o = await other.open();
      try {
        expect(o.id).not.toBe(id);
      } finally {
        await o.close();
        await other.cleanup();
      }
    });

    it('assigns offsets that only grow, increasing within an append', async () => {
      const l = await fresh();
      expect(l.endOffset()).toBe(0);
      const a = await l.append([record(0), record(1), record(2)]);
      const b = await l.append([record(3)]);
      expect(a.firstOffset).toBe(0);
      expect(b.firstOffset).toBeGreaterThanOrEqual(a.firstOffset + 3);
      if (harness.contiguousOffsets) expect(b.firstOffset).toBe(3);
      expect(l.endOffset()).toBe(b.firstOffset + 1);
      const got = await collect(l, 'g', 4);
      expect(got.map((d) => d.messageId)).toEqual(['m-0', 'm-1', 'm-2', 'm-3']);
      expect(got[0]!.offset).toBe(a.firstOffset);
      expect(got[3]!.offset).toBe(b.firstOffset);
      for (let i = 1; i < got.length; i++) expect(got[i]!.offset).toBeGreaterThan(got[i - 1]!.offset);
    });

    it('gives concurrent appends unique offsets, increasing within each append, in the order readers see', async () => {
      const l = await fresh();
      const results = await Promise.all(
        Array.from({ length: 50 }, (_, i) => l.append([record(i * 2), record(i * 2 + 1)])),
      );
      const starts = results.map((r) => r.firstOffset);
      expect(new Set(starts).size).toBe(50);
      const got = await collect(l, 'g', 100);
      expect(got.length).toBe(100);
      for (let i = 1; i < got.length; i++) expect(got[i]!.offset).toBeGreaterThan(got[i - 1]!.offset);
      const offsetOf = new Map(got.map((d) => [d.messageId, d.offset]));
      expect(offsetOf.size).toBe(100);
      for (const [i, r] of results.entries()) {
        expect(offsetOf.get(`m-${i * 2}`)).toBe(r.firstOffset);
        expect(offsetOf.get(`m-${i * 2 + 1}`)!).toBeGreaterThan(r.firstOffset);
      }
      if (harness.contiguousOffsets) {
        expect([...starts].sort((x, y) => x - y)).toEqual(Array.from({ length: 50 }, (_, i) => i * 2));
        expect(got.map((d) => d.offset)).toEqual(Array.from({ length: 100 }, (_, i) => i));
        // Each append's two records stay together and in order.
        for (const [i, r] of results.entries())
          expect(offsetOf.get(`m-${i * 2 + 1}`)).toBe(r.firstOffset + 1);
      }
    });

    it('delivers records with every field intact', async () => {
      const l = await fresh();
      const rejected: RawEvent = {
        sourceId: 'app',
        messageId: 'bad-1',
        receivedAt: 1_790_000_000_123,
        status: 'rejected',
        code: 'TRIB_ERR_EVENT_MISSING_IDENTITY',
        reason: 'needs an id\twith a tab',
        json: JSON.stringify({ type: 'track', text: 'line\nbreak\ttab "quoted" ☃' }),
      };
      const { firstOffset } = await l.append([record(0), rejected]);
      const got = await collect(l, 'g', 2);
      expect(got[0]).toEqual({ ...record(0), offset: firstOffset });
      expect(got[1]).toEqual({ ...rejected, offset: got[1]!.offset });
      expect(got[1]!.offset).toBeGreaterThan(firstOffset);
    });

    it('resumes a group from its committed offset and keeps groups apart', async () => {
      let l = await fresh();
      await l.append(Array.from({ length: 10 }, (_, i) => record(i)));
      const first = await collect(l, 'a', 10);
      expect(first.length).toBe(10);
      expect(await l.committedOffset('a')).toBe(first[9]!.offset + 1);
      await l.append(Array.from({ length: 5 }, (_, i) => record(10 + i)));
      const next = await collect(l, 'a', 5);
      expect(next.map((d) => d.messageId)).toEqual(['m-10', 'm-11', 'm-12', 'm-13', 'm-14']);
      expect(next[0]!.offset).toBeGreaterThan(first[9]!.offset);
      if (harness.contiguousOffsets) expect(next.map((d) => d.offset)).toEqual([10, 11, 12, 13, 14]);
      expect((await collect(l, 'b', 15)).length).toBe(15);
      l = await harness.reopen(l);
      log = l;
      expect(await l.committedOffset('a')).toBe(next[4]!.offset + 1);
    });

    it('starts a group at `from` below its committed offset, as a store restored from a backup asks', async () => {
      let l = await fresh();
      await l.append(Array.from({ length: 10 }, (_, i) => record(i)));
      const first = await collect(l, 'a', 10);
      const ids = (from: number) => Array.from({ length: 10 - from }, (_, i) => `m-${from + i}`);
      const again = await collect(l, 'a', 7, undefined, first[3]!.offset);
      expect(again.map((d) => d.messageId)).toEqual(ids(3));
      l = await harness.reopen(l);
      log = l;
      expect((await collect(l, 'a', 10, undefined, 0)).map((d) => d.messageId)).toEqual(ids(0));
      // A group never seen before starts at `from` too.
      expect((await collect(l, 'new', 5, undefined, first[5]!.offset)).map((d) => d.messageId)).toEqual(
        ids(5),
      );
    });

    it('redelivers a batch whose handler failed (at-least-once)', async () => {
      const l = await fresh();
      await l.append([record(0), record(1)]);
      const got = await collect(l, 'g', 2, { times: 2 });
      expect(got.map((d) => d.offset)).toEqual([0, 1]);
    });

    it('keeps records and offsets across a restart', async () => {
      let l = await fresh();
      await l.append([record(0), record(1)]);
      l = await harness.reopen(l);
      log = l;
      expect(l.endOffset()).toBe(2);
      const c = await l.append([record(2)]);
      expect(c.firstOffset).toBeGreaterThanOrEqual(2);
      if (harness.contiguousOffsets) expect(c.firstOffset).toBe(2);
      const got = await collect(l, 'g', 3);
      expect(got.map((d) => d.messageId)).toEqual(['m-0', 'm-1', 'm-2']);
    });

    it('drained() waits for the consumer to handle what was appended', async () => {
      const l = await fresh();
      const seen: number[] = [];
      const sub = l.consume('g', async (batch) => {
        await new Promise((r) => setTimeout(r, 20));
        seen.push(...batch.map((d) => d.offset));
      });
      await l.append(Array.from({ length: 20 }, (_, i) => record(i)));
      await sub.drained();
      expect(seen.length).toBe(20);
      await sub.stop();
    });
  });
}
