import { describe, expect, it } from 'vitest';
import { TrackingPlan } from '../../config/quality-schema.js';
import { checkPlan } from './check-plan.js';
import { inferPlan } from './infer-plan.js';

const orders = Array.from({ length: 40 }, (_, i) => ({
  type: 'track',
  event: 'Order Completed',
  properties: {
    total: i % 2 === 0 ? 10 : 10.5,
    currency: i % 3 === 0 ? 'EUR' : 'USD',
    order_id: `o-${i}`,
    items: [{ sku: 'a' }],
    ...(i === 0 ? { coupon: 'X' } : {}),
    ...(i < 39 ? { shipping: { method: 'post', days: 2 } } : {}),
  },
}));

describe('inferPlan', () => {
  it('drafts types, required keys, enums and nested objects (golden)', () => {
    const plan = inferPlan('web-draft', [
      ...orders,
      { type: 'identify', traits: { email: 'a@b.co', age: 3 } },
      { type: 'identify', traits: { email: 'c@d.co' } },
      'not an event',
    ]);
    expect(plan).toEqual({
      name: 'web-draft',
      onViolation: 'allow',
      onUnplannedEvent: 'allow',
      events: {
        'Order Completed': {
          description: 'seen 40 times',
          properties: {
            type: 'object',
            properties: {
              coupon: { type: 'string' },
              currency: { type: 'string', enum: ['EUR', 'USD'] },
              items: { type: 'array', items: { type: 'object' } },
              order_id: { type: 'string' },
              shipping: {
                type: 'object',
                properties: { days: { type: 'integer' }, method: { type: 'string', enum: ['post'] } },
                required: ['days', 'method'],
              },
              total: { type: 'number' },
            },
            required: ['currency', 'items', 'order_id', 'shipping', 'total'],
          },
        },
      },
      identify: {
        traits: {
          type: 'object',
          properties: { age: { type: 'integer' }, email: { type: 'string' } },
          required: ['email'],
        },
      },
    });
    // The draft is a valid plan; of the events it was drawn from, only the one without the
    // nearly-always-present `shipping` breaks it.
    const parsed = TrackingPlan.parse(plan);
    expect(checkPlan([parsed], orders)).toMatchObject({
      events: 40,
      clean: 39,
      flagged: 1,
      violations: [{ path: '/properties', message: "must have required property 'shipping'", count: 1 }],
    });
  });
});

describe('checkPlan', () => {
  it('reports what a blocking plan would do, with the most frequent violations first', () => {
    const plan = TrackingPlan.parse({
      name: 'strict',
      onViolation: 'block',
      events: {
        'Order Completed': {
          properties: { type: 'object', required: ['total'], properties: { total: { type: 'integer' } } },
        },
      },
    });
    const report = checkPlan([plan], [...orders, { type: 'track', event: 'Other' }, { type: 'page' }]);
    expect(report).toEqual({
      events: 42,
      clean: 21,
      flagged: 1,
      blocked: 20,
      unplanned: 1,
      omittedProperties: 0,
      violations: [{ plan: 'strict', path: '/properties/total', message: 'must be integer', count: 20 }],
      unplannedEvents: [{ event: 'Other', count: 1 }],
    });
  });
});
