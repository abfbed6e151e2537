import { afterEach, describe, expect, it } from 'vitest';
import { DestinationConfig } from '../../src/config/destinations-schema.js';
import type { CheckResult, DestinationContext } from '../../src/destinations/connector.js';
import type { WarehouseDestination } from '../../src/destinations/destination.js';
import { destinationKind } from '../../src/destinations/registry.js';
import type { ErrorCode } from '../../src/errors.js';
import type { StoredEvent } from '../../src/store/store.js';
import { storedEvent } from './warehouse-conformance.js';

/**
 * The suite every destination kind of the registry must pass, through its connector as the
 * runner uses it (`check`, `create`, `storedOffset`, `load`): the stored offset resumes
 * exactly, a redelivered load doubles nothing, a load that dies between its rows and its
 * commit stores nothing and loads once when redone, a record the destination refuses is
 * isolated while the rest loads, and `check` names a wrong host, user, database or path with
 * its code.
 * The engines' own behaviour (layout, types, names) is `warehouse-conformance.ts`; a process
 * killed during loads is `test/warehouse-crash.test.ts` (all three kinds, through the CLI).
 */
export interface DestinationHarness {
  /** A configuration entry of the kind on fresh storage (a new database, file or folder). */
  entry: Record<string, unknown>;
  /** What `create` gets besides the entry (the offset key and scope are set by the suite). */
  context: Pick<DestinationContext, 'instance' | 'dataDir' | 'checkpoints'>;
  /** The messageIds of the track events loaded, once per stored row, sorted. */
  loadedIds(): Promise<string[]>;
  /**
   * Makes the destination refuse the event it returns (loading what it needs first, at offsets
   * from `from`): the next offset free and the event to refuse at it.
   */
  refusal(d: WarehouseDestination, from: number): Promise<{ next: number; bad: StoredEvent }>;
  /** Entries its `check` must refuse, each with the code it must give. */
  wrong: { why: string; entry: Record<string, unknown>; code: ErrorCode }[];
  cleanup(): Promise<void>;
}

const track = (offset: number) =>
  storedEvent(offset, { type: 'track', event: 'Order Completed', userId: 'u1', properties: { n: offset } });
const ids = (from: number, to: number) => Array.from({ length: to - from }, (_, i) => `m-${from + i}`).sort();

export function destinationConformance(
  type: string,
  makeHarness: () => Promise<DestinationHarness> | undefined,
) {
  describe(`destination conformance: ${type}`, () => {
    let h: DestinationHarness | undefined;
    const open: WarehouseDestination[] = [];
    afterEach(async () => {
      for (const d of open.splice(0)) await d.close().catch(() => undefined);
      await h?.cleanup();
      h = undefined;
    });

    async function harness() {
      h = (await makeHarness())!;
      return h;
    }
    /** A destination of the entry, created through the registry as the runner does. */
    async function create(entry: Record<string, unknown>) {
      const config = DestinationConfig.parse(entry);
      const connector = await destinationKind(config.type).connector();
      const d = await (
        connector.create as (c: unknown, ctx: DestinationContext) => Promise<WarehouseDestination>
      )(config, { ...h!.context, offsetKey: config.id, scope: { workspace: 'conformance', logId: 'log-1' } });
      open.push(d);
      return d;
    }
    async function check(entry: Record<string, unknown>): Promise<CheckResult> {
      const config = DestinationConfig.parse(entry);
      const connector = await destinationKind(config.type).connector();
      return (connector.check as (c: unknown, ctx: { dataDir: string }) => Promise<CheckResult>)(config, {
        dataDir: h!.context.dataDir,
      });
    }

    it('resumes exactly at its stored offset after a restart', async () => {
      const { entry } = await harness();
      const first = await create(entry);
      expect(await first.storedOffset()).toBe(0);
      const loaded = await first.load([0, 1, 2, 3, 4].map(track), 5);
      expect(loaded).toEqual({ status: 'ok', failed: [] });
      // Only rejected records behind: the offset moves with no rows.
      await first.load([], 7);
      await first.close();
      open.splice(open.indexOf(first), 1);

      const again = await create(entry);
      const from = await again.storedOffset();
      expect(from).toBe(7);
      await again.load([7, 8, 9].map(track), 10);
      expect(await again.storedOffset()).toBe(10);
      expect(await h!.loadedIds()).toEqual([...ids(0, 5), ...ids(7, 10)].sort());
    });

    it('doubles nothing when a committed load is delivered again, as after a crash before the feed moved on', async () => {
      const { entry } = await harness();
      const d = await create(entry);
      const batch = [0, 1, 2].map(track);
      await d.load(batch, 3);
      // The feed reads from the stored offset, so a batch comes again only whole, as it was:
      // merging rows that overlap a stored offset on id is the SQL kinds' own (warehouse-conformance.ts).
      await d.load(batch, 3);
      await d.load([3].map(track), 4);
      expect(await d.storedOffset()).toBe(4);
      expect(await h!.loadedIds()).toEqual(ids(0, 4));
    });

    it('leaves out the record it refuses, reports it before the commit, and loads the rest with the offset', async () => {
      const { entry } = await harness();
      const d = await create(entry);
      const { next, bad } = await h!.refusal(d, 0);
      const before = await h!.loadedIds();
      const reported: string[] = [];
      const result = await d.load([track(next + 1), bad, track(next + 2)], next + 3, {
        onFailed: async (failed) => {
          reported.push(...failed.map((f) => f.event.messageId));
        },
      });
      expect(result.status).toBe('ok');
      expect(result.status === 'ok' && result.failed.map((f) => [f.event.messageId, f.code])).toEqual([
        [bad.messageId, 'TRIB_ERR_DEST_RECORD_REFUSED'],
      ]);
      expect(reported).toEqual([bad.messageId]);
      expect(await d.storedOffset()).toBe(next + 3);
      expect(await h!.loadedIds()).toEqual([...before, `m-${next + 1}`, `m-${next + 2}`].sort());
      // and it goes on
      await d.load([track(next + 3)], next + 4);
      expect(await d.storedOffset()).toBe(next + 4);
    });

    it('stores nothing of a load that dies before its commit, and stores it once when redone', async () => {
      const { entry } = await harness();
      const d = await create(entry);
      const { next, bad } = await h!.refusal(d, 0);
      const before = await h!.loadedIds();
      const batch = [track(next + 1), bad, track(next + 2)];
      // The failures' store goes down between the rows and the commit: the load must not commit.
      const died = await d
        .load(batch, next + 3, {
          onFailed: async () => {
            throw new Error('the failed-event store is gone');
          },
        })
        .then(
          (r) => r.status,
          () => 'threw',
        );
      expect(['retryable', 'threw']).toContain(died);
      expect(await d.storedOffset()).toBe(next);
      expect(await h!.loadedIds()).toEqual(before);
      // The feed redoes it from the stored offset, as after a restart.
      const redone = await d.load(batch, next + 3);
      expect(redone.status === 'ok' && redone.failed.map((f) => f.event.messageId)).toEqual([bad.messageId]);
      expect(await d.storedOffset()).toBe(next + 3);
      expect(await h!.loadedIds()).toEqual([...before, `m-${next + 1}`, `m-${next + 2}`].sort());
    });

    it('checks its configuration, naming what is wrong with a stable code', async () => {
      const { entry, wrong } = await harness();
      expect(await check(entry)).toEqual({ ok: true });
      for (const w of wrong) {
        const result = await check(w.entry);
        expect({ why: w.why, ...result }).toMatchObject({ why: w.why, ok: false, code: w.code });
        expect(result.ok || result.message.length).toBeGreaterThan(20);
      }
    });
  });
}
