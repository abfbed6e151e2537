import { afterEach, describe, expect, it } from 'vitest';
import type { OffsetScope, SqlEngine } from '../../src/destinations/destination.js';
import { SegmentWarehouse } from '../../src/destinations/warehouse/segment-warehouse.js';
import type { StoredEvent } from '../../src/store/store.js';

/**
 * The suite every SQL warehouse engine must pass: the same test bodies against DuckDB and
 * PostgreSQL. SQL in the tests is the subset both engines read alike (quoted identifiers,
 * `CAST(… AS VARCHAR)`, `extract(epoch FROM …)`).
 */
export interface WarehouseHarness {
  /** A fresh engine on empty storage (a new file, a new database). */
  engine(): Promise<SqlEngine>;
  /** Another engine on the same storage, as after a restart. */
  reopen(): Promise<SqlEngine>;
  /** Rows of a query on the storage, values as the driver gives them. */
  query(sql: string): Promise<Record<string, unknown>[]>;
  cleanup(): Promise<void>;
}

const T0 = Date.parse('2026-11-20T10:00:00.000Z');

/** An event as the feed hands it over: processed, with the server-side fields. */
export function storedEvent(offset: number, event: Record<string, unknown>, sourceId = 'web'): StoredEvent {
  const messageId = String(event.messageId ?? `m-${offset}`);
  const at = new Date(T0 + offset * 1000).toISOString();
  return {
    logOffset: offset,
    sourceId,
    messageId,
    receivedAt: T0 + offset * 1000,
    json: JSON.stringify({
      messageId,
      timestamp: at,
      receivedAt: at,
      sentAt: at,
      originalTimestamp: at,
      context: { library: { name: 'analytics.js', version: '2.11.1' }, page: { path: '/p' } },
      ...event,
    }),
  };
}

const track = (offset: number, event: string, properties: Record<string, unknown>, extra = {}) =>
  storedEvent(offset, { type: 'track', event, userId: 'u1', properties, ...extra });

export function warehouseConformance(name: string, harness: () => Promise<WarehouseHarness> | undefined) {
  describe(`Segment warehouse conformance: ${name}`, () => {
    let h: WarehouseHarness;
    const open: SegmentWarehouse[] = [];
    afterEach(async () => {
      for (const w of open.splice(0)) await w.close().catch(() => undefined);
      await h?.cleanup();
    });

    async function warehouse(
      options: { maxColumns?: number; reopen?: boolean; scope?: OffsetScope; offsetKey?: string } = {},
    ) {
      if (!options.reopen) h = (await harness())!;
      const engine = options.reopen ? await h.reopen() : await h.engine();
      const w = new SegmentWarehouse({
        name: 'wh',
        engine,
        maxColumns: options.maxColumns,
        scope: options.scope,
        offsetKey: options.offsetKey,
      });
      open.push(w);
      return w;
    }
    const count = async (table: string) =>
      Number((await h.query(`SELECT count(*) AS n FROM ${table}`))[0]!.n);
    const text = async (sql: string) =>
      (await h.query(sql)).map((r) => Object.values(r).map((v) => (v === null ? null : String(v))));

    it('lays events out in the Segment tables, one table per event name, context and properties flattened', async () => {
      const w = await warehouse();
      expect(await w.storedOffset()).toBe(0);
      await w.load(
        [
          track(0, 'Order Completed', { total: 30, address: { city: 'Oslo' }, skus: ['a', 'b'] }),
          track(1, 'Order Completed', { total: 12 }),
          track(2, 'Signed Up', { plan: 'pro' }),
          storedEvent(3, { type: 'identify', userId: 'u1', traits: { email: 'a@x.io', plan: 'free' } }),
          storedEvent(4, { type: 'identify', userId: 'u1', traits: { plan: 'pro' } }),
          storedEvent(5, {
            type: 'page',
            anonymousId: 'a1',
            name: 'Home',
            properties: { url: 'https://x.io/' },
          }),
          storedEvent(6, { type: 'screen', userId: 'u2', name: 'Settings', properties: { tab: 2 } }),
          storedEvent(7, { type: 'group', userId: 'u1', groupId: 'g1', traits: { employees: 40 } }),
          storedEvent(8, { type: 'alias', userId: 'u3', previousId: 'a1' }),
        ],
        9,
      );
      expect(await w.storedOffset()).toBe(9);
      expect(
        (
          await text(
            `SELECT id, event, event_text, user_id, CAST(total AS VARCHAR), address_city, context_page_path,
                  context_library_name, CAST(extract(epoch FROM received_at) AS BIGINT), skus
           FROM "web"."order_completed" ORDER BY id`,
          )
        ).map((r) => r.slice(0, -1)),
      ).toEqual([
        ['m-0', 'order_completed', 'Order Completed', 'u1', '30', 'Oslo', '/p', 'analytics.js', '1795168800'],
        ['m-1', 'order_completed', 'Order Completed', 'u1', '12', null, '/p', 'analytics.js', '1795168801'],
      ]);
      // arrays are stored as JSON (engines render JSON text differently, so compare parsed)
      const [first] = await h.query(`SELECT skus FROM "web"."order_completed" WHERE id = 'm-0'`);
      const skus = first!.skus;
      expect(typeof skus === 'string' ? JSON.parse(skus) : skus).toEqual(['a', 'b']);
      expect(await text('SELECT id, event, event_text FROM "web"."tracks" ORDER BY id')).toEqual([
        ['m-0', 'order_completed', 'Order Completed'],
        ['m-1', 'order_completed', 'Order Completed'],
        ['m-2', 'signed_up', 'Signed Up'],
      ]);
      expect(await text('SELECT id, plan FROM "web"."signed_up"')).toEqual([['m-2', 'pro']]);
      expect(await text('SELECT id, user_id, email, plan FROM "web"."identifies" ORDER BY id')).toEqual([
        ['m-3', 'u1', 'a@x.io', 'free'],
        ['m-4', 'u1', null, 'pro'],
      ]);
      // users: the latest value of each trait
      expect(await text('SELECT id, email, plan FROM "web"."users"')).toEqual([['u1', 'a@x.io', 'pro']]);
      expect(await text('SELECT id, anonymous_id, name, url FROM "web"."pages"')).toEqual([
        ['m-5', 'a1', 'Home', 'https://x.io/'],
      ]);
      expect(await text('SELECT id, name, CAST(tab AS VARCHAR) FROM "web"."screens"')).toEqual([
        ['m-6', 'Settings', '2'],
      ]);
      expect(await text('SELECT id, group_id, CAST(employees AS VARCHAR) FROM "web"."groups"')).toEqual([
        ['m-7', 'g1', '40'],
      ]);
      expect(await text('SELECT id, user_id, previous_id FROM "web"."aliases"')).toEqual([
        ['m-8', 'u3', 'a1'],
      ]);
      expect(await count('"web"."discards"')).toBe(0);
      const loaded = await h.query('SELECT count(*) AS n FROM "web"."tracks" WHERE loaded_at IS NULL');
      expect(Number(loaded[0]!.n)).toBe(0);
    });

    it('stores awkward text exactly: tabs, newlines, quotes, backslashes, brackets and emoji, in inserted and merged rows', async () => {
      const w = await warehouse();
      const odd = 'tab\there, line\nbreak, "quoted", back\\slash, [1, null], ü 🧪';
      await w.load(
        [
          track(0, 'Order Completed', { note: odd, json_like: '{"a": [1]}', empty: '', nothing: null }),
          storedEvent(1, { type: 'identify', userId: 'u1', traits: { note: odd, plan: 'free' } }),
          storedEvent(2, { type: 'identify', userId: 'u1', traits: { plan: `pro ${odd}` } }),
        ],
        3,
      );
      expect(await text('SELECT note, json_like, empty FROM "web"."order_completed"')).toEqual([
        [odd, '{"a": [1]}', ''],
      ]);
      // users: merged, a trait missing from the later identify keeping the stored value
      expect(await text('SELECT id, note, plan FROM "web"."users"')).toEqual([['u1', odd, `pro ${odd}`]]);
      expect(await text('SELECT id, note FROM "web"."identifies" ORDER BY id')).toEqual([
        ['m-1', odd],
        ['m-2', null],
      ]);
    });

    it('types columns from the first value, widens bigint to double, and discards what cannot be cast', async () => {
      const w = await warehouse();
      await w.load(
        [
          track(0, 'E', { n: 1, when: '2026-11-20T10:00:00Z', ok: true, label: 'x' }),
          track(1, 'E', { n: 2.5, when: 'yesterday', ok: 'maybe', label: 7 }),
        ],
        2,
      );
      await w.load([track(2, 'E', { n: 'many', when: '2026-11-21T10:00:00+01:00' })], 3);
      expect(
        await text(
          `SELECT id, n, CAST(extract(epoch FROM _when) AS BIGINT), CAST(ok AS VARCHAR), label
           FROM "web"."e" ORDER BY id`,
        ),
      ).toEqual([
        ['m-0', '1', '1795168800', 'true', 'x'],
        ['m-1', '2.5', null, null, '7'],
        ['m-2', null, '1795251600', null, null],
      ]);
      expect(
        await text(
          `SELECT table_name, column_name, row_id, value FROM "web"."discards" ORDER BY row_id, column_name`,
        ),
      ).toEqual([
        ['e', '_when', 'm-1', 'yesterday'],
        ['e', 'ok', 'm-1', 'maybe'],
        ['e', 'n', 'm-2', 'many'],
      ]);
      const reasons = await text('SELECT reason FROM "web"."discards" ORDER BY row_id, column_name');
      expect(reasons[1]![0]).toBe('the string "maybe" cannot be cast to boolean');
    });

    it('folds names with one sanitizer, keeps colliding ones apart, drops core-column clashes and records the mapping', async () => {
      const w = await warehouse();
      await w.load([track(0, 'Plan Chosen', { Plan: 'a', plan: 'b', user_id: 'evil', select: 1 })], 1);
      const [row] = await h.query('SELECT * FROM "web"."plan_chosen"');
      const columns = Object.keys(row!);
      expect(columns).toContain('plan');
      expect(columns).toContain('_select');
      const hashed = columns.filter((c) => /^plan_[0-9a-f]{8}$/.test(c));
      expect(hashed).toHaveLength(1);
      expect(row!.user_id).toBe('u1');
      expect(await text('SELECT column_name, value FROM "web"."discards"')).toEqual([['user_id', 'evil']]);
      const names = await text(
        `SELECT key, name FROM "_tributary"."warehouse_names"
         WHERE kind = 'column' AND table_name = 'plan_chosen' AND key LIKE 'prop:%' ORDER BY key`,
      );
      expect(names).toEqual([
        ['prop:Plan', 'plan'],
        ['prop:plan', hashed[0]],
        ['prop:select', '_select'],
      ]);

      // After a restart the same keys get the same columns, and new ones do not take them.
      await w.close();
      const again = await warehouse({ reopen: true });
      expect(await again.storedOffset()).toBe(1);
      await again.load([track(1, 'Plan Chosen', { plan: 'c', PLAN: 'd' })], 2);
      const rows = await text(`SELECT id, plan, ${hashed[0]} FROM "web"."plan_chosen" ORDER BY id`);
      expect(rows).toEqual([
        ['m-0', 'a', 'b'],
        ['m-1', null, 'c'],
      ]);
      const [latest] = await h.query(`SELECT * FROM "web"."plan_chosen" WHERE id = 'm-1'`);
      const planColumns = Object.entries(latest!).filter(([k]) => k.startsWith('plan'));
      expect(planColumns.map(([, v]) => v).sort()).toEqual(['c', 'd', null].sort());
    });

    it('keeps properties past the column limit in the overflow column', async () => {
      const w = await warehouse({ maxColumns: 24 });
      const properties = Object.fromEntries(Array.from({ length: 40 }, (_, i) => [`p${i}`, i]));
      await w.load([track(0, 'Wide', properties)], 1);
      await w.load([track(1, 'Wide', { p0: 100, p39: 139, extra: 'x' })], 2);
      const rows = await h.query('SELECT * FROM "web"."wide" ORDER BY id');
      expect(Object.keys(rows[0]!).length).toBeLessThanOrEqual(24);
      const byId = (i: number) => {
        const r = rows[i]!;
        const overflow = r._overflow;
        const parsed = (typeof overflow === 'string' ? JSON.parse(overflow) : overflow) as Record<
          string,
          unknown
        >;
        const inColumns = Object.fromEntries(
          Object.entries(r)
            .filter(([k, v]) => /^p\d+$/.test(k) && v !== null)
            .map(([k, v]) => [k, Number(v)]),
        );
        return { ...inColumns, ...parsed };
      };
      expect(byId(0)).toEqual(properties);
      expect(byId(1)).toEqual({ p0: 100, p39: 139, extra: 'x' });
    });

    it('stores control characters exactly: record separators, NAK alone and inside text, next to plain loads', async () => {
      const w = await warehouse();
      const rs = 'a\u001eb';
      const nak = '\u0015';
      await w.load(
        [track(0, 'E', { v: rs }), track(1, 'E', { v: nak }), track(2, 'E', { v: `x${nak}y` })],
        3,
      );
      await w.load(
        [track(3, 'E', { v: 'plain' }), track(4, 'E', { v: `x${nak}y` }), track(5, 'E', { v: null })],
        6,
      );
      await w.load([track(6, 'E', { v: nak })], 7);
      expect(await text('SELECT id, v FROM "web"."e" ORDER BY id')).toEqual([
        ['m-0', rs],
        ['m-1', nak],
        ['m-2', `x${nak}y`],
        ['m-3', 'plain'],
        ['m-4', `x${nak}y`],
        ['m-5', null],
        ['m-6', nak],
      ]);
      expect(await count('"web"."tracks"')).toBe(7);
    });

    it('never stores an event twice: redelivered batches and ids are merged on id', async () => {
      const w = await warehouse();
      const batch = [track(0, 'E', { n: 1 }), track(1, 'E', { n: 2 })];
      await w.load(batch, 2);
      await w.load(batch, 2);
      await w.load([track(1, 'E', { n: 2 }), track(2, 'E', { n: 3 }), track(2, 'E', { n: 3 })], 3);
      expect(await text('SELECT id FROM "web"."e" ORDER BY id')).toEqual([['m-0'], ['m-1'], ['m-2']]);
      expect(await count('"web"."tracks"')).toBe(3);
      expect(await w.storedOffset()).toBe(3);
      // only rejected records behind: the offset moves with no rows
      await w.load([], 5);
      expect(await w.storedOffset()).toBe(5);
      expect(await count('"web"."tracks"')).toBe(3);
    });

    it('leaves out only the event the engine refuses, and loads the rest with the offset', async () => {
      const w = await warehouse();
      await w.load([track(0, 'Blocked', { n: 1 })], 1);
      // Another writer changed a column's type: the values planned for it cannot go in.
      await h.query('ALTER TABLE "web"."blocked" ALTER COLUMN n TYPE BOOLEAN USING (n <> 0)');
      const result = await w.load([track(1, 'E', { n: 2 }), track(2, 'Blocked', { n: 5 })], 3);
      expect(result.status).toBe('ok');
      expect(result.status === 'ok' && result.failed.map((f) => [f.event.messageId, f.code])).toEqual([
        ['m-2', 'TRIB_ERR_DEST_RECORD_REFUSED'],
      ]);
      expect(await w.storedOffset()).toBe(3);
      expect(await text('SELECT id FROM "web"."tracks" ORDER BY id')).toEqual([['m-0'], ['m-1']]);
      expect(await count('"web"."blocked"')).toBe(1);
    });

    it('stores the failures before the load commits, and loads every other event of the batch', async () => {
      const w = await warehouse();
      await w.load([track(0, 'Blocked', { n: 1 })], 1);
      await h.query('ALTER TABLE "web"."blocked" ALTER COLUMN n TYPE BOOLEAN USING (n <> 0)');
      const batch = [1, 2, 3].map((i) => track(i, 'E', { n: i }));
      batch.push(track(4, 'Blocked', { n: 5 }), ...[5, 6, 7].map((i) => track(i, 'E', { n: i })));
      const seen: { ids: string[]; next: number; stored: number }[] = [];
      const result = await w.load(batch, 8, {
        onFailed: async (failed, next) => {
          const probe = await warehouse({ reopen: true });
          seen.push({ ids: failed.map((f) => f.event.messageId), next, stored: await probe.storedOffset() });
        },
      });
      expect(result.status === 'ok' && result.failed.map((f) => f.event.messageId)).toEqual(['m-4']);
      expect(result.status === 'ok' && result.failed[0]!.reason).toMatch(/refused the event/);
      expect(seen).toEqual([{ ids: ['m-4'], next: 8, stored: 1 }]);
      expect(await w.storedOffset()).toBe(8);
      expect(await count('"web"."tracks"')).toBe(7);
      expect(await count('"web"."e"')).toBe(6);
      // and the destination goes on
      await w.load([track(8, 'E', { n: 8 })], 9);
      expect(await count('"web"."e"')).toBe(7);
      expect(await w.storedOffset()).toBe(9);
    });

    it('stores lone surrogates in JSON values as U+FFFD, as text columns do', async () => {
      const w = await warehouse();
      // JavaScript strings may hold them; no engine's JSON takes them.
      const result = await w.load(
        [
          storedEvent(0, {
            type: 'identify',
            userId: 'u9',
            traits: { tags: ['\ud800', 'ok'], name: 'a\udfff' },
          }),
          track(1, 'E', { list: ['x\udbff'] }),
        ],
        2,
      );
      expect(result).toEqual({ status: 'ok', failed: [] });
      const parsed = (v: unknown) => (typeof v === 'string' ? JSON.parse(v) : v);
      const [user] = await h.query('SELECT tags, name FROM "web"."users"');
      expect(parsed(user!.tags)).toEqual(['\ufffd', 'ok']);
      expect(user!.name).toBe('a\ufffd');
      const [e] = await h.query('SELECT list FROM "web"."e"');
      expect(parsed(e!.list)).toEqual(['x\ufffd']);
    });

    it('stores an event with 1,100 numeric properties, with what a row cannot hold in the overflow column', async () => {
      const w = await warehouse();
      const wide = (offset: number, k: number) =>
        track(offset, 'Wide', Object.fromEntries(Array.from({ length: 1100 }, (_, i) => [`p${i}`, i + k])));
      const result = await w.load([wide(0, 0.5), wide(1, 0.25)], 2);
      expect(result).toEqual({ status: 'ok', failed: [] });
      const rows = await h.query('SELECT * FROM "web"."wide" ORDER BY id');
      expect(rows.map((r) => r.id)).toEqual(['m-0', 'm-1']);
      for (const [row, k] of [
        [rows[0]!, 0.5],
        [rows[1]!, 0.25],
      ] as const) {
        const raw = row._overflow;
        const overflow = (typeof raw === 'string' ? JSON.parse(raw) : (raw ?? {})) as Record<string, unknown>;
        const values = Array.from({ length: 1100 }, (_, i) => Number(row[`p${i}`] ?? overflow[`p${i}`]));
        expect(values).toEqual(Array.from({ length: 1100 }, (_, i) => i + k));
      }
      expect(await w.storedOffset()).toBe(2);
    });

    it('keeps offsets per workspace and log, and refuses offsets of another log unless told to start over', async () => {
      const a = await warehouse({ scope: { workspace: 'a', logId: 'log-1' } });
      expect(await a.storedOffset()).toBe(0);
      await a.load([track(0, 'E', { n: 1 }), track(1, 'E', { n: 2 })], 2);
      // Another workspace loading into the same tables starts from its own log's start.
      const b = await warehouse({ reopen: true, scope: { workspace: 'b', logId: 'log-2' } });
      expect(await b.storedOffset()).toBe(0);
      await b.load([track(0, 'E', { n: 3 }, { messageId: 'b-0' })], 1);
      expect(await text('SELECT id FROM "web"."e" ORDER BY id')).toEqual([['b-0'], ['m-0'], ['m-1']]);
      expect(await a.storedOffset()).toBe(2);
      expect(await b.storedOffset()).toBe(1);
      // A new log of workspace a finds log-1's offsets: it would skip events, so it refuses.
      const fresh = await warehouse({ reopen: true, scope: { workspace: 'a', logId: 'log-3' } });
      const refused = await fresh.storedOffset().then(
        () => undefined,
        (e: unknown) => e,
      );
      expect(refused).toMatchObject({ code: 'TRIB_ERR_DEST_FOREIGN_OFFSETS' });
      expect((refused as Error).message).toContain('startOver: true');
      const over = await warehouse({
        reopen: true,
        scope: { workspace: 'a', logId: 'log-3', startOver: true },
      });
      expect(await over.storedOffset()).toBe(0);
      await over.load([track(0, 'E', { n: 4 }, { messageId: 'c-0' })], 1);
      expect(await over.storedOffset()).toBe(1);
      expect(await b.storedOffset()).toBe(1); // other workspaces untouched
      expect(await count('"web"."e"')).toBe(4);
    });

    it('moves offsets of a version before scopes: the first workspace and log to read one take it over', async () => {
      h = (await harness())!;
      await h.query('CREATE SCHEMA _tributary');
      await h.query(`CREATE TABLE _tributary.warehouse_offsets (
        destination VARCHAR PRIMARY KEY, next_offset BIGINT NOT NULL, updated_at TIMESTAMPTZ NOT NULL)`);
      await h.query(`INSERT INTO _tributary.warehouse_offsets VALUES ('wh', 5, now())`);
      const mine = await warehouse({ reopen: true, scope: { workspace: 'a', logId: 'log-1' } });
      expect(await mine.storedOffset()).toBe(5);
      await mine.load([track(5, 'E', { n: 1 })], 6);
      const other = await warehouse({ reopen: true, scope: { workspace: 'b', logId: 'log-2' } });
      expect(await other.storedOffset()).toBe(0);
      expect(await mine.storedOffset()).toBe(6);
    });

    it('loads a large batch (planned in parts by some engines) with columns added and widened late', async () => {
      const w = await warehouse();
      const batch = Array.from({ length: 6000 }, (_, i) =>
        track(i, 'Big', {
          n: i < 3000 ? i : i + 0.5,
          ...(i >= 5000 ? { late: `x${i}` } : {}),
        }),
      );
      batch.push(track(6000, 'Big', { n: 1 }, { messageId: 'm-100' })); // a repeated id, parts apart
      await w.load(batch, 6001);
      expect(await count('"web"."big"')).toBe(6000);
      expect(await count('"web"."tracks"')).toBe(6000);
      const [row] = await h.query(`SELECT count(late) AS late, sum(n) AS total FROM "web"."big"`);
      expect(Number(row!.late)).toBe(1000);
      expect(Number(row!.total)).toBe((5999 * 6000) / 2 + 3000 * 0.5);
      expect(await w.storedOffset()).toBe(6001);
    });

    it('gives each source its own schema', async () => {
      const w = await warehouse();
      await w.load([track(0, 'E', { n: 1 }, {}), { ...track(1, 'E', { n: 1 }), sourceId: 'mobile-app' }], 2);
      expect(await count('"web"."tracks"')).toBe(1);
      expect(await count('"mobile_app"."tracks"')).toBe(1);
    });
  });
}
