import fc from 'fast-check';
import type { Delivered } from '../../src/log/event-log.js';

/**
 * Arbitrary events as the collector accepts them, for the property that the loader stores or
 * fails any of them and loads the next one (run on each event store adapter).
 */

// Strings of any UTF-16 code units: lone surrogates, U+0000, controls.
export const text = fc.string({
  unit: fc.integer({ min: 0, max: 0xffff }).map((c) => String.fromCharCode(c)),
});
export const number = fc.oneof(
  fc.double(),
  fc.integer(),
  fc.constantFrom(1e308, -1e308, 5e-324, -0, 2 ** 53 + 2, 1e21, 1.2345678901234568e29),
);
export const timestamp = fc.oneof(
  fc.date({ noInvalidDate: true }).map((d) => d.toISOString()),
  fc.constantFrom(
    '2020-02-30T00:00:00.000Z',
    '+300000-01-01T00:00:00.000Z',
    '-000001-01-01T00:00:00.000Z',
    '0000-00-00',
    '2020-13-01',
    '',
    '24:00',
  ),
  text,
  number,
);
export const { json } = fc.letrec((tie) => ({
  json: fc.oneof(
    { depthSize: 'small', maxDepth: 60 },
    text,
    number,
    fc.boolean(),
    fc.constant(null),
    fc.array(tie('json'), { maxLength: 4 }),
    fc.dictionary(text, tie('json'), { maxKeys: 4 }),
  ),
}));
/** The fields of an odd event: any properties, any timestamp, any userId. */
export const oddFields = fc.record({
  properties: fc.dictionary(text, json, { maxKeys: 5 }),
  timestamp,
  userId: fc.option(text),
});

const T0 = Date.UTC(2026, 10, 20, 10);

/** A record as the collector writes it to the log: its JSON with the server-side fields. */
export function delivered(offset: number, event: Record<string, unknown>, sourceId = 'web'): Delivered {
  const messageId = `m-${offset}`;
  const at = new Date(T0 + offset).toISOString();
  return {
    offset,
    sourceId,
    messageId,
    receivedAt: T0 + offset,
    status: 'accepted',
    json: JSON.stringify({
      type: 'track',
      event: 'E',
      userId: 'u1',
      messageId,
      timestamp: at,
      originalTimestamp: at,
      receivedAt: at,
      sentAt: at,
      ...event,
    }),
  };
}
