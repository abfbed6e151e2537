import { afterEach, describe, expect, it } from 'vitest';
import type { Delivered, EventLog, RawEvent } from '../../src/log/event-log.js';

/** What an adapter under test provides: a fresh log, and the same log opened again. */
export interface EventLogHarness {
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
): Promise<Delivered[]> {
  const got: Delivered[] = [];
  let failures = 0;
  const sub = log.consume(group, async (batch) => {
    if (fail && failures < fail.times) {
      failures++;
      throw new Error('handler failure');
    }
    got.push(...batch);
  });
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

    it('assigns offsets that only grow, contiguous within an append', async () => {
      const l = await fresh();
      expect(l.endOffset()).toBe(0);
      const a = await l.append([record(0), record(1), record(2)]);
      const b = await l.append([record(3)]);
      expect(a.firstOffset).toBe(0);
      expect(b.firstOffset).toBe(3);
      expect(l.endOffset()).toBe(4);
    });

    it('gives concurrent appends disjoint offset ranges, in one order readers see', async () => {
      const l = await fresh();
      const results = await Promise.all(
        Array.from({ length: 50 }, (_, i) => l.append([record(i * 2), record(i * 2 + 1)])),
      );
      const starts = results.map((r) => r.firstOffset).sort((x, y) => x - y);
      expect(new Set(starts).size).toBe(50);
      expect(starts).toEqual(Array.from({ length: 50 }, (_, i) => i * 2));
      const got = await collect(l, 'g', 100);
      expect(got.map((d) => d.offset)).toEqual(Array.from({ length: 100 }, (_, i) => i));
      // Each append's two records stay together and in order.
      for (const r of results) {
        const first = got[r.firstOffset]!;
        const second = got[r.firstOffset + 1]!;
        expect(Number(second.messageId.slice(2))).toBe(Number(first.messageId.slice(2)) + 1);
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
      await l.append([record(0), rejected]);
      const got = await collect(l, 'g', 2);
      expect(got[0]).toEqual({ ...record(0), offset: 0 });
      expect(got[1]).toEqual({ ...rejected, offset: 1 });
    });

    it('resumes a group from its committed offset and keeps groups apart', async () => {
      let l = await fresh();
      await l.append(Array.from({ length: 10 }, (_, i) => record(i)));
      expect((await collect(l, 'a', 10)).length).toBe(10);
      expect(await l.committedOffset('a')).toBe(10);
      await l.append(Array.from({ length: 5 }, (_, i) => record(10 + i)));
      const next = await collect(l, 'a', 5);
      expect(next.map((d) => d.offset)).toEqual([10, 11, 12, 13, 14]);
      expect((await collect(l, 'b', 15)).length).toBe(15);
      l = await harness.reopen(l);
      log = l;
      expect(await l.committedOffset('a')).toBe(15);
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
      expect(c.firstOffset).toBe(2);
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
