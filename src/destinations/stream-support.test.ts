import { describe, expect, it } from 'vitest';
import { encodeRow, tableColumns } from './sql-upsert/table-mapping.js';
import type { Delivery } from './stream.js';
import { encodeBody, renderTemplate, valueAt } from './stream-support.js';

const d: Delivery = {
  key: 'm-1',
  orderKey: 'u1',
  op: 'event',
  payload: {
    type: 'track',
    event: 'Order/Completed #1',
    userId: 'u1',
    properties: { plan: 'pro', n: 3, tags: ['a'] },
  },
};

describe('stream connector helpers', () => {
  it('reads values by path, the delivery fields by $name, and never from the prototype', () => {
    expect(valueAt(d, 'properties.plan')).toBe('pro');
    expect(valueAt(d, '$key')).toBe('m-1');
    expect(valueAt(d, '$op')).toBe('event');
    expect(valueAt(d, '$')).toBe(d.payload);
    expect(valueAt(d, 'properties.missing.deeper')).toBeUndefined();
    expect(valueAt(d, '__proto__')).toBeUndefined();
    expect(valueAt(d, 'properties.constructor')).toBeUndefined();
    expect(valueAt(d, 'properties.tags.0')).toBeUndefined();
  });

  it('fills templates, with absent and structured values empty and values cleaned for the target', () => {
    expect(renderTemplate('events.{type}.{properties.plan}', d)).toBe('events.track.pro');
    expect(renderTemplate('{type}/{nothing}/{properties}', d)).toBe('track//');
    expect(renderTemplate('t/{event}', d, (v) => v.replace(/[/+#]/g, '_'))).toBe('t/Order_Completed _1');
  });

  it('fails a body larger than the limit with its size, and encodes the rest', () => {
    const ok = encodeBody('dest', d, 10_000);
    expect(Buffer.isBuffer(ok) && JSON.parse(ok.toString())).toEqual(d.payload);
    const big = encodeBody('dest', d, 10);
    expect(!Buffer.isBuffer(big) && big).toMatchObject({
      status: 'failed',
      code: 'TRIB_ERR_DEST_MESSAGE_TOO_LARGE',
    });
  });

  it('maps a delivery to row values: JSON for objects, NULL for absent values, refused without its key', () => {
    const cols = tableColumns({
      table: 't',
      columns: { plan: 'properties.plan', id: '$key', tags: 'properties.tags', gone: 'properties.x' },
      key: ['id'],
      createTable: false,
      identityColumns: {},
    });
    expect(cols.map((c) => c.name)).toEqual(['id', 'plan', 'tags', 'gone']);
    expect(encodeRow(cols, d)).toEqual({ values: ['m-1', 'pro', '["a"]', null], keyText: '["m-1"]' });
    expect(encodeRow(cols, { ...d, key: '' })).toEqual({ error: 'key column id has no value at $key' });
  });
});

describe('stream destination specs', () => {
  it('refuse names that are not plain identifiers, keys that are not mapped, and URLs that do not parse', async () => {
    const { postgresUpsertDestination } = await import('./postgres-upsert/spec.js');
    const { redisStreamsDestination } = await import('./redis-streams/spec.js');
    const base = { id: 'crm', type: 'postgres-upsert', host: 'db', database: 'crm', table: 'contacts' };
    expect(postgresUpsertDestination.config.parse(base)).toMatchObject({
      key: ['message_id'],
      createTable: false,
    });
    const problems = (entry: Record<string, unknown>) =>
      postgresUpsertDestination.config.safeParse(entry).error?.issues.map((i) => i.path.join('.'));
    expect(problems({ ...base, table: 'contacts; DROP TABLE x' })).toEqual(['table']);
    expect(problems({ ...base, columns: { 'a"b': 'userId' } })).toEqual(['columns.a"b']);
    expect(problems({ ...base, columns: { user_id: 'userId' }, key: ['email'] })).toEqual(['key']);
    expect(
      problems({ ...base, columns: { n: { path: 'x', type: 'int); DROP TABLE y; --' } }, key: ['n'] }),
    ).toEqual(['columns.n.type']);
    expect(
      redisStreamsDestination.config.safeParse({
        id: 'r',
        type: 'redis-streams',
        connectionString: 'redis://a b:[x',
      }).success,
    ).toBe(false);
  });
});
