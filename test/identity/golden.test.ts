import { DuckDBInstance } from '@duckdb/node-api';
import { afterEach, describe, expect, it } from 'vitest';
import { IdentityConfig } from '../../src/config/identity-schema.js';
import { DuckDBIdentityStore } from '../../src/identity/duckdb/duckdb-identity-store.js';
import { compileRules } from '../../src/identity/identifiers.js';
import type { IdentityChanges } from '../../src/identity/identity-engine.js';
import { IdentityStage } from '../../src/identity/identity-stage.js';
import type { IdentityStore } from '../../src/identity/identity-store.js';
import { DuckDBStore } from '../../src/store/duckdb/duckdb-store.js';
import type { StoredEvent } from '../../src/store/store.js';
import { COMPUTED, goldenScenarios } from './golden-scenarios.js';
import { type IdentityPipeline, identityPipeline, T0, type TestEvent } from './harness.js';

const open: IdentityPipeline[] = [];
afterEach(async () => {
  for (const p of open.splice(0)) await p.destroy();
});
async function pipeline(options: Parameters<typeof identityPipeline>[0] = {}) {
  const p = await identityPipeline(options);
  open.push(p);
  return p;
}

goldenScenarios('real DuckDB store', (options) => identityPipeline(options));

/** Every method of the identity store port passed on to `store`, but those given. */
function delegating(store: IdentityStore, own: Partial<IdentityStore>): IdentityStore {
  return {
    offset: () => store.offset(),
    load: () => store.load(),
    prepareCommit: (changes, profile, next) => store.prepareCommit(changes, profile, next),
    eventsOfProfile: (id) => store.eventsOfProfile(id),
    recentEvents: (id, n) => store.recentEvents(id, n),
    decisions: (a, b, n) => store.decisions(a, b, n),
    erasureOf: (ids) => store.erasureOf(ids),
    erase: (t) => store.erase(t),
    close: () => store.close(),
    ...own,
  };
}

/** `store`'s `prepareCommit`, with each write going through `write` (`run` is the store's own). */
function writingThrough(
  store: IdentityStore,
  write: (run: () => Promise<void>, changes: IdentityChanges) => Promise<void>,
): Pick<IdentityStore, 'prepareCommit'> {
  return {
    async prepareCommit(changes, profile, next) {
      const run = await store.prepareCommit(changes, profile, next);
      return () => write(run, changes);
    },
  };
}

/**
 * An identity stage with default rules on an in-memory DuckDB store, with some of the
 * store's methods replaced (`own` gets the real store); the stage is driven by hand.
 */
async function stageOnDuckDB(own: (real: DuckDBIdentityStore) => Partial<IdentityStore>) {
  const instance = await DuckDBInstance.create(':memory:');
  const warehouse = await DuckDBStore.open(instance);
  const real = await DuckDBIdentityStore.open(instance);
  const stage = await IdentityStage.open(delegating(real, own(real)), compileRules(IdentityConfig.parse({})));
  return {
    real,
    stage,
    async close() {
      await stage.stop();
      await real.close();
      await warehouse.close();
      instance.closeSync();
    },
  };
}

/** A stored event at `logOffset` with the given payload text (an identify of `userId` by default). */
function storedEvent(logOffset: number, userId: string, json?: string): StoredEvent {
  const at = new Date(T0).toISOString();
  const messageId = `m${logOffset}`;
  return {
    logOffset,
    sourceId: 'web',
    messageId,
    receivedAt: T0,
    json: json ?? JSON.stringify({ type: 'identify', userId, messageId, timestamp: at, receivedAt: at }),
  };
}

describe('identity resolution: exactly once', () => {
  it('a commit that fails before or after the transaction is retried without counting twice', async () => {
    let failBefore = 1;
    let failAfter = 1;
    const wrap = (store: IdentityStore): IdentityStore =>
      delegating(
        store,
        writingThrough(store, async (run, changes) => {
          if (changes.assignments.length > 0 && failBefore-- > 0) throw new Error('disk full (before)');
          await run();
          // Committed, but the stage never hears it: the feed retries from the stored offset.
          if (changes.assignments.length > 0 && failAfter-- > 0) throw new Error('connection lost (after)');
        }),
      );
    const p = await pipeline({ identity: COMPUTED, wrap });
    const orders = (from: number, n: number) =>
      Array.from({ length: n }, (_, i) => ({
        type: 'track',
        messageId: `e${from + i}`,
        at: from + i,
        userId: 'u',
        event: 'Order Completed',
        properties: { total: 2 },
      }));
    await p.send(orders(0, 3));
    await p.send(orders(3, 2));
    expect(p.errors.map((e) => (e as Error).message)).toEqual([
      'disk full (before)',
      'connection lost (after)',
    ]);
    const u = await p.stage.getProfile('user_id:u');
    expect(u.computedTraits).toMatchObject({ orders: 5, revenue: 10 });
    expect(u.eventCount).toBe(5);
    expect(
      await p.query('SELECT count(*) AS n, count(DISTINCT log_offset) AS d FROM identity_decisions'),
    ).toEqual([{ n: 5, d: 5 }]);

    // A restart resumes from the stored offset: nothing is resolved again.
    await p.close();
    const again = await pipeline({ identity: COMPUTED, dir: p.dir });
    await again.send(orders(5, 1));
    const after = await again.stage.getProfile('user_id:u');
    expect(after.computedTraits).toMatchObject({ orders: 6, revenue: 12 });
    expect(await again.query('SELECT count(*) AS n FROM profile_events')).toEqual([{ n: 6 }]);
  });
});

describe('identity stage: a batch resolves while the previous one commits', () => {
  it('a transaction that fails midway in DuckDB leaves nothing behind, and the batch resolves again once', async () => {
    const p = await pipeline({ identity: COMPUTED });
    const orders = (from: number, n: number) =>
      Array.from({ length: n }, (_, i) => ({
        type: 'track',
        messageId: `o${from + i}`,
        at: from + i,
        userId: `u${(from + i) % 4}`,
        anonymousId: `a${from + i}`,
        event: 'Order Completed',
        properties: { total: 1 },
      }));
    await p.send(orders(0, 8));
    // The decisions table goes away: the next transaction fails after its profile rows and
    // identifiers were already written in it.
    await p.query('ALTER TABLE identity_decisions RENAME TO identity_decisions_away');
    const sending = p.send(orders(8, 8));
    while (p.errors.length === 0) await new Promise((r) => setTimeout(r, 10));
    expect(String(p.errors[0])).toContain('identity_decisions');
    await p.query('ALTER TABLE identity_decisions_away RENAME TO identity_decisions');
    await sending;
    expect(
      await p.query('SELECT count(*) AS n, count(DISTINCT message_id) AS d FROM identity_decisions'),
    ).toEqual([{ n: 16, d: 16 }]);
    expect(await p.query('SELECT count(*) AS n FROM profile_events')).toEqual([{ n: 16 }]);
    expect(
      await p.query(
        "SELECT count(*) AS n, count(DISTINCT type || ':' || value) AS d FROM profile_identifiers",
      ),
    ).toEqual([{ n: 20, d: 20 }]);
    for (let u = 0; u < 4; u++) {
      const v = await p.stage.getProfile(`user_id:u${u}`);
      expect(v.eventCount).toBe(4);
      expect(v.computedTraits).toMatchObject({ orders: 4, revenue: 4 });
    }
  });

  it('a batch that fails to resolve waits for the commit in flight before it reloads from the store', async () => {
    let committing = 0;
    const overlaps: string[] = [];
    let release!: () => void;
    const gate = new Promise<void>((r) => {
      release = r;
    });
    const { real, stage, close } = await stageOnDuckDB((real) => ({
      async load() {
        if (committing > 0) overlaps.push('load during a commit');
        return real.load();
      },
      ...writingThrough(real, async (run) => {
        committing++;
        try {
          const done = run();
          await gate;
          await done;
        } finally {
          committing--;
        }
      }),
    }));
    try {
      await stage.handle([storedEvent(0, 'u1')], 1); // returns with its commit in flight
      expect(committing).toBe(1);
      const failing = stage.handle([storedEvent(1, '', '{"type": "track", not json')], 2);
      setTimeout(release, 50);
      await expect(failing).rejects.toThrow(SyntaxError);
      expect(overlaps).toEqual([]);
      expect(await real.offset()).toBe(1);
      expect(stage.lookup('user_id:u1')).toBeDefined();
    } finally {
      await close();
    }
  });
});

describe('identity stage: rows built while the previous batch is written', () => {
  it("prepares a batch's rows while the previous write runs, and starts its write only after that one ended", async () => {
    const log: string[] = [];
    let release!: () => void;
    const gate = new Promise<void>((r) => {
      release = r;
    });
    let writes = 0;
    const { real, stage, close } = await stageOnDuckDB((real) => ({
      async prepareCommit(changes, profile, next) {
        log.push(`prepare ${next}`);
        const run = await real.prepareCommit(changes, profile, next);
        return async () => {
          const n = ++writes;
          log.push(`write ${next} start`);
          if (n === 1) await gate;
          await run();
          log.push(`write ${next} end`);
        };
      },
    }));
    try {
      await stage.handle([storedEvent(0, 'u0')], 1); // returns with its write held at the gate
      const second = stage.handle([storedEvent(1, 'u1'), storedEvent(2, 'u0')], 3);
      for (let i = 0; i < 400 && !log.includes('prepare 3'); i++) await new Promise((r) => setTimeout(r, 5));
      expect(log).toEqual(['prepare 1', 'write 1 start', 'prepare 3']);
      release();
      await second;
      await stage.flush();
      expect(log).toEqual([
        'prepare 1',
        'write 1 start',
        'prepare 3',
        'write 1 end',
        'write 3 start',
        'write 3 end',
      ]);
      expect(await real.offset()).toBe(3);
      expect(stage.lookup('user_id:u0')?.eventCount).toBe(2);
      const stored = await real.load();
      expect(stored.profiles.map((p) => p.eventCount).sort()).toEqual([1, 2]);
    } finally {
      release();
      await close();
    }
  });
});

describe('identity stage: a background commit that fails while an unmerge waits for it', () => {
  it('the unmerge reports it, and the next batch is refused so the feed goes back to the stored offset', async () => {
    let failNext = false;
    const { real, stage, close } = await stageOnDuckDB((real) =>
      writingThrough(real, async (run) => {
        if (failNext) {
          failNext = false;
          await new Promise((r) => setTimeout(r, 20));
          throw new Error('disk full (injected)'); // nothing written, as a rolled-back transaction
        }
        await run();
      }),
    );
    try {
      await stage.handle([storedEvent(0, 'u0')], 1);
      await stage.flush();
      failNext = true;
      await stage.handle([storedEvent(1, 'u1')], 2); // its commit fails in the background
      await expect(stage.unmerge('no-such-merge')).rejects.toThrow('disk full (injected)');
      // The feed believes [1, 2) handled; the stage refuses what comes next instead of losing it.
      await expect(stage.handle([storedEvent(2, 'u2')], 3)).rejects.toThrow('disk full (injected)');
      expect(await real.offset()).toBe(1);
      // The feed re-reads from the stored offset: every event resolved once.
      await stage.handle([storedEvent(1, 'u1'), storedEvent(2, 'u2')], 3);
      await stage.flush();
      expect(await real.offset()).toBe(3);
      for (const u of ['u0', 'u1', 'u2']) expect(stage.lookup(`user_id:${u}`)?.eventCount).toBe(1);
    } finally {
      await close();
    }
  });
});

describe('identity store', () => {
  it('stores awkward identifier values, trait values and timestamps exactly, whatever the time zone', async () => {
    const p = await pipeline();
    // Stored rows go to DuckDB as text lines: tabs, newlines, quotes and backslashes must survive.
    await p.query("SET GLOBAL TimeZone = 'Asia/Kolkata'");
    const odd = 'tab\there, line\nbreak, "quoted", back\\slash, ü 🧪';
    const traits = {
      email: 'Odd.Person@Example.com',
      note: odd,
      nested: { list: [1, 'two', null, { deep: odd }], flag: true },
      [`key\twith tab`]: 3.25,
    };
    await p.send([
      { type: 'identify', messageId: 'a1', at: 0.001, userId: odd, traits },
      {
        type: 'track',
        messageId: 'a2',
        at: 1,
        userId: odd,
        event: 'x',
        context: { device: { id: `dev ${odd}` } },
      },
      // Before 1970: a negative epoch, with milliseconds.
      {
        type: 'identify',
        messageId: 'a3',
        at: -T0 / 60_000 - 1.0005,
        anonymousId: 'old',
        traits: { plan: 'p' },
      },
    ]);
    const stored = await p.query(
      `SELECT type, value, epoch_ms(first_seen) AS first FROM profile_identifiers ORDER BY type, value`,
    );
    expect(stored).toEqual([
      { type: 'anonymous_id', value: 'old', first: -60_030 },
      { type: 'device_id', value: `dev ${odd}`, first: T0 + 60_000 },
      { type: 'email', value: 'odd.person@example.com', first: T0 + 60 },
      { type: 'user_id', value: odd, first: T0 + 60 },
    ]);
    const traitRows = await p.query(
      `SELECT trait, CAST(value AS VARCHAR) AS value, epoch_ms("timestamp") AS ts FROM profile_traits WHERE trait <> 'plan' ORDER BY trait`,
    );
    expect(traitRows.map((r) => [r.trait, JSON.parse(String(r.value)), r.ts])).toEqual(
      Object.entries(traits)
        .sort(([a], [b]) => (a < b ? -1 : 1))
        .map(([k, v]) => [k, v, T0 + 60]),
    );
    // And what a restart loads back is what memory held (in the server's time zone, which
    // `recentEvents` formats in).
    await p.query("SET GLOBAL TimeZone = 'UTC'");
    const before = await p.stage.getProfile(`user_id:${odd}`, { now: 0 });
    const again = await p.reopen();
    open.push(again as IdentityPipeline);
    expect(await again.stage.getProfile(`user_id:${odd}`, { now: 0 })).toEqual(before);
  });

  it('holds exactly what memory holds after a mixed workload of attaches, merges and limits', async () => {
    const p = await pipeline({ identity: { ...COMPUTED, identifiers: { device_id: { limit: 2 } } } });
    const events: TestEvent[] = [];
    let n = 0;
    // 30 people, each with two anonymous devices, identifies and orders; every 5th shares a device.
    for (let person = 0; person < 30; person++) {
      for (const device of [`d${person}a`, `d${person}b`]) {
        events.push({ type: 'page', messageId: `m${n++}`, at: n, anonymousId: device, name: 'Home' });
        events.push({
          type: 'identify',
          messageId: `m${n++}`,
          at: n,
          anonymousId: device,
          userId: `u${person}`,
          traits: { email: `p${person}@x.io`, plan: n % 2 ? 'pro' : 'free' },
          context: { device: { id: `hw-${device}` } },
        });
        events.push({
          type: 'track',
          messageId: `m${n++}`,
          at: n,
          anonymousId: person % 5 === 0 ? `d${person + 1}a` : device,
          userId: `u${person}`,
          event: 'Order Completed',
          properties: { total: person },
          context: { device: { id: `hw-extra-${person}-${device}` } },
        });
      }
    }
    for (let i = 0; i < events.length; i += 7) await p.send(events.slice(i, i + 7));
    // Identifiers attached in a later transaction than the profile's creation, with no merge after.
    const late = [0, 1, 2].map((i) => `late-${i}`);
    await p.send(
      late.map((a) => ({ type: 'page', messageId: `${a}-p`, at: 500, anonymousId: a, name: 'Home' })),
    );
    await p.send(
      late.map((a) => ({
        type: 'track',
        messageId: `${a}-t`,
        at: 501,
        anonymousId: a,
        userId: `u-${a}`,
        event: 'E',
      })),
    );
    const keys = (await p.query('SELECT type, value FROM profile_identifiers ORDER BY 1, 2')).map(
      (r) => `${r.type}:${r.value}`,
    );
    expect(keys.length).toBeGreaterThan(150);
    const view = async (stage: typeof p.stage) =>
      Promise.all(
        keys.map(async (k) => {
          const v = await stage.getProfile(k, { now: 0 });
          return {
            ...v,
            identifiers: [...v.identifiers].sort((a, b) =>
              `${a.type}:${a.value}`.localeCompare(`${b.type}:${b.value}`),
            ),
          };
        }),
      );
    const before = await view(p.stage);
    await p.close();
    const again = await pipeline({
      identity: { ...COMPUTED, identifiers: { device_id: { limit: 2 } } },
      dir: p.dir,
    });
    expect(await view(again.stage)).toEqual(before);
    expect(await again.query('SELECT count(*) AS n FROM profiles')).toEqual([
      { n: new Set(before.map((b) => b.profileId)).size },
    ]);
  });
});
