import { describe, expect, it } from 'vitest';
import { normalizeEvent, type RequestEnvelope } from './normalize.js';

const RECEIVED = Date.parse('2026-11-21T12:00:00.000Z');
const env = (over: Partial<RequestEnvelope> = {}): RequestEnvelope => ({
  receivedAt: RECEIVED,
  ip: '203.0.113.7',
  newMessageId: () => 'generated-id',
  ...over,
});

function ok(raw: unknown, e: RequestEnvelope = env()) {
  const r = normalizeEvent(raw, e);
  if (!r.ok) throw new Error(`rejected: ${r.code}`);
  return r.event;
}

describe('normalizeEvent: server-side fields', () => {
  it('sets receivedAt, generates a messageId where absent and keeps a given one', () => {
    const a = ok({ type: 'track', event: 'X', userId: 'u' });
    expect(a.receivedAt).toBe('2026-11-21T12:00:00.000Z');
    expect(a.messageId).toBe('generated-id');
    expect(ok({ type: 'track', event: 'X', userId: 'u', messageId: 'm-1' }).messageId).toBe('m-1');
  });

  it('sets context.ip from the request unless the event has one', () => {
    expect(ok({ type: 'identify', userId: 'u' }).context?.ip).toBe('203.0.113.7');
    expect(ok({ type: 'identify', userId: 'u', context: { ip: '10.0.0.1' } }).context?.ip).toBe('10.0.0.1');
  });

  it('merges batch-level context and integrations, the event winning', () => {
    const e = ok(
      {
        type: 'track',
        event: 'X',
        userId: 'u',
        context: { locale: 'fr' },
        integrations: { Mixpanel: false },
      },
      env({
        context: { locale: 'en', library: { name: 'lib' } },
        integrations: { All: true, Mixpanel: true },
      }),
    );
    expect(e.context).toMatchObject({ locale: 'fr', library: { name: 'lib' } });
    expect(e.integrations).toEqual({ All: true, Mixpanel: false });
  });

  it('takes the route type over the body type and coerces numeric ids to strings', () => {
    const e = ok({ type: 'bogus', event: 'X', userId: 42 }, env({ routeType: 'track' }));
    expect(e.type).toBe('track');
    expect(e.userId).toBe('42');
  });

  it('drops a body-level writeKey from the stored event', () => {
    expect(ok({ type: 'track', event: 'X', userId: 'u', writeKey: 'secret' }).writeKey).toBeUndefined();
  });
});

describe('normalizeEvent: timestamp rules', () => {
  it('uses the explicit timestamp as given', () => {
    expect(ok({ type: 'track', event: 'X', userId: 'u', timestamp: '2026-11-20T08:00:00Z' }).timestamp).toBe(
      '2026-11-20T08:00:00.000Z',
    );
  });

  it('corrects clock skew: receivedAt - (sentAt - originalTimestamp)', () => {
    // The device clock is 1 h fast: it stamped the event at 13:00:00 and sent it at 13:00:05.
    const e = ok({
      type: 'track',
      event: 'X',
      userId: 'u',
      originalTimestamp: '2026-11-21T13:00:00.000Z',
      sentAt: '2026-11-21T13:00:05.000Z',
    });
    expect(e.timestamp).toBe('2026-11-21T11:59:55.000Z');
    expect(e.originalTimestamp).toBe('2026-11-21T13:00:00.000Z');
  });

  it('takes sentAt from the batch when the event has none', () => {
    const e = ok(
      { type: 'track', event: 'X', userId: 'u', originalTimestamp: '2026-11-21T11:00:00.000Z' },
      env({ sentAt: '2026-11-21T11:00:10.000Z' }),
    );
    expect(e.timestamp).toBe('2026-11-21T11:59:50.000Z');
  });

  it('falls back to receivedAt without any client time', () => {
    expect(ok({ type: 'page', anonymousId: 'a' }).timestamp).toBe('2026-11-21T12:00:00.000Z');
  });

  it('replaces a timestamp more than 23 h in the future by receivedAt and keeps a warning', () => {
    const e = ok({ type: 'track', event: 'X', userId: 'u', timestamp: '2026-11-22T11:00:01.000Z' });
    expect(e.timestamp).toBe('2026-11-21T12:00:00.000Z');
    expect(e._tributary).toEqual({
      warnings: [expect.objectContaining({ code: 'TRIB_WARN_TIMESTAMP_IN_FUTURE' })],
    });
  });

  it('rejects impossible and out-of-range instants in any timestamp field', () => {
    const base = { type: 'track', event: 'X', userId: 'u' };
    for (const bad of [
      { timestamp: '2020-02-30T00:00:00.000Z' },
      { timestamp: '-271821-04-20T00:00:00.000Z' },
      { originalTimestamp: '+275760-09-13T00:00:00.000Z' },
      { originalTimestamp: '2021-02-29T10:00:00Z' },
      { sentAt: '-271821-04-20T00:00:00.000Z' },
      { sentAt: '2020-01-01T24:00:00Z' },
    ]) {
      const r = normalizeEvent({ ...base, ...bad }, env());
      expect(r, JSON.stringify(bad)).toMatchObject({ ok: false, code: 'TRIB_ERR_EVENT_INVALID_TIMESTAMP' });
    }
    const r = normalizeEvent(
      { ...base, originalTimestamp: '2026-11-21T11:00:00.000Z' },
      env({ sentAt: '2020-02-30T00:00:00.000Z' }),
    );
    expect(r).toMatchObject({ ok: false, code: 'TRIB_ERR_EVENT_INVALID_TIMESTAMP' });
  });

  it('rejects a clock-skew correction that leaves the calendar, without throwing', () => {
    const r = normalizeEvent(
      {
        type: 'track',
        event: 'X',
        userId: 'u',
        originalTimestamp: '0001-01-01T00:00:00.000Z',
        sentAt: '9999-12-31T00:00:00.000Z',
      },
      env(),
    );
    expect(r).toMatchObject({ ok: false, code: 'TRIB_ERR_EVENT_INVALID_TIMESTAMP' });
  });

  it('keeps a timestamp just under 23 h ahead', () => {
    const e = ok({ type: 'track', event: 'X', userId: 'u', timestamp: '2026-11-22T10:59:59.000Z' });
    expect(e.timestamp).toBe('2026-11-22T10:59:59.000Z');
    expect(e._tributary).toBeUndefined();
  });
});

describe('normalizeEvent: rejections', () => {
  const cases: [string, unknown, string][] = [
    ['not an object', 'hello', 'TRIB_ERR_EVENT_NOT_OBJECT'],
    ['an array', [1], 'TRIB_ERR_EVENT_NOT_OBJECT'],
    ['unknown type', { type: 'explode', userId: 'u' }, 'TRIB_ERR_EVENT_UNKNOWN_TYPE'],
    ['no identity', { type: 'track', event: 'X' }, 'TRIB_ERR_EVENT_MISSING_IDENTITY'],
    [
      'empty identity',
      { type: 'track', event: 'X', userId: '', anonymousId: null },
      'TRIB_ERR_EVENT_MISSING_IDENTITY',
    ],
    ['track without event', { type: 'track', userId: 'u' }, 'TRIB_ERR_EVENT_MISSING_EVENT_NAME'],
    ['track with numeric event', { type: 'track', userId: 'u', event: 5 }, 'TRIB_ERR_EVENT_INVALID_FIELD'],
    [
      'messageId over 100',
      { type: 'track', event: 'X', userId: 'u', messageId: 'm'.repeat(101) },
      'TRIB_ERR_EVENT_MESSAGE_ID_TOO_LONG',
    ],
    [
      'numeric messageId',
      { type: 'track', event: 'X', userId: 'u', messageId: 7 },
      'TRIB_ERR_EVENT_INVALID_FIELD',
    ],
    ['object userId', { type: 'track', event: 'X', userId: { id: 1 } }, 'TRIB_ERR_EVENT_INVALID_FIELD'],
    [
      'array properties',
      { type: 'track', event: 'X', userId: 'u', properties: [1] },
      'TRIB_ERR_EVENT_INVALID_FIELD',
    ],
    ['string traits', { type: 'identify', userId: 'u', traits: 'x' }, 'TRIB_ERR_EVENT_INVALID_FIELD'],
    [
      'bad timestamp',
      { type: 'track', event: 'X', userId: 'u', timestamp: 'yesterday' },
      'TRIB_ERR_EVENT_INVALID_TIMESTAMP',
    ],
    [
      'numeric timestamp',
      { type: 'track', event: 'X', userId: 'u', timestamp: 1700000000 },
      'TRIB_ERR_EVENT_INVALID_FIELD',
    ],
    ['group without groupId', { type: 'group', userId: 'u' }, 'TRIB_ERR_EVENT_MISSING_GROUP_ID'],
    ['alias without previousId', { type: 'alias', userId: 'u' }, 'TRIB_ERR_EVENT_MISSING_PREVIOUS_ID'],
  ];
  it.each(cases)('%s', (_name, raw, code) => {
    const r = normalizeEvent(raw, env());
    expect(r.ok).toBe(false);
    if (!r.ok) expect(r.code).toBe(code);
  });

  it('accepts a messageId of exactly 100 characters', () => {
    expect(ok({ type: 'track', event: 'X', userId: 'u', messageId: 'm'.repeat(100) }).messageId).toHaveLength(
      100,
    );
  });
});
