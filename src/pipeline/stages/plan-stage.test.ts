import { describe, expect, it } from 'vitest';
import { TrackingPlan } from '../../config/quality-schema.js';
import type { Delivered } from '../../log/event-log.js';
import type { SegmentEvent } from '../../spec/event.js';
import { PlanStage } from './plan-stage.js';
import type { PipelineEvent } from './stage.js';

const plan = (over: object) =>
  TrackingPlan.parse({
    name: 'shop',
    events: {
      'Order Completed': {
        properties: {
          type: 'object',
          required: ['total'],
          properties: { total: { type: 'number' }, currency: { enum: ['EUR', 'USD'] } },
        },
      },
    },
    identify: { traits: { type: 'object', properties: { email: { type: 'string', format: 'email' } } } },
    ...over,
  });

function pe(event: Partial<SegmentEvent>, offset = 0): PipelineEvent {
  const full = {
    type: 'track',
    messageId: `m${offset}`,
    receivedAt: '',
    timestamp: '',
    ...event,
  } as SegmentEvent;
  const record: Delivered = {
    offset,
    sourceId: 'web',
    messageId: full.messageId,
    receivedAt: 0,
    status: 'accepted',
    json: JSON.stringify(full),
  };
  return { record, event: full };
}

const order = (properties: object) => pe({ event: 'Order Completed', properties });

describe('PlanStage', () => {
  it('allow: the event passes carrying its violations (golden)', () => {
    const r = new PlanStage([plan({ onViolation: 'allow' })]).run([order({ total: '12', currency: 'GBP' })]);
    expect(r.fail).toEqual([]);
    expect(r.pass[0]!.event._tributary).toEqual({
      violations: [
        { plan: 'shop', kind: 'schema', path: '/properties/total', message: 'must be number' },
        {
          plan: 'shop',
          kind: 'schema',
          path: '/properties/currency',
          message: 'must be equal to one of the allowed values: ["EUR","USD"]',
        },
      ],
    });
  });

  it('omit_properties: unplanned properties are dropped, and recorded', () => {
    const r = new PlanStage([plan({ onViolation: 'omit_properties' })]).run([
      order({ total: 3, coupon: 'X' }),
    ]);
    expect(r.pass[0]!.event.properties).toEqual({ total: 3 });
    expect(r.pass[0]!.event._tributary).toEqual({ omitted: ['properties.coupon'] });
  });

  it('block: a violating event fails with its reasons; a valid one passes untouched', () => {
    const stage = new PlanStage([plan({ onViolation: 'block' })]);
    const r = stage.run([order({}), order({ total: 1 })]);
    expect(r.pass.map((p) => p.event.properties)).toEqual([{ total: 1 }]);
    expect(r.pass[0]!.event._tributary).toBeUndefined();
    expect(r.fail).toMatchObject([
      {
        stage: 'plan',
        code: 'TRIB_ERR_PLAN_VIOLATION',
        kind: 'blocked',
        reason: 'plan "shop": /properties must have required property \'total\'',
      },
    ]);
  });

  it('unplanned events: allowed with a violation, or blocked, by their own setting', () => {
    const allow = new PlanStage([plan({ onViolation: 'block' })]).run([pe({ event: 'Coupon Applied' })]);
    expect(allow.pass[0]!.event._tributary).toMatchObject({ violations: [{ kind: 'unplanned_event' }] });
    const block = new PlanStage([plan({ onUnplannedEvent: 'block' })]).run([pe({ event: 'Coupon Applied' })]);
    expect(block.fail).toMatchObject([{ code: 'TRIB_ERR_PLAN_UNPLANNED_EVENT', kind: 'blocked' }]);
  });

  it('checks identify traits with formats, and lets a second plan judge the events it names', () => {
    const second = TrackingPlan.parse({
      name: 'auth',
      onViolation: 'block',
      events: { 'Logged In': { properties: { type: 'object', required: ['method'] } } },
    });
    const stage = new PlanStage([plan({ onViolation: 'block' }), second]);
    const r = stage.run([
      pe({ type: 'identify', traits: { email: 'nope' } }, 1),
      pe({ event: 'Logged In', properties: {} }, 2),
      pe({ event: 'Logged In', properties: { method: 'sso' } }, 3),
    ]);
    expect(r.fail.map((f) => [f.record.offset, f.reason])).toEqual([
      [1, 'plan "shop": /traits/email must match format "email"'],
      [2, 'plan "auth": /properties must have required property \'method\''],
    ]);
    expect(r.pass.map((p) => p.record.offset)).toEqual([3]);
  });

  it('refuses a schema ajv cannot compile, naming where it is', () => {
    expect(() => new PlanStage([plan({ events: { X: { properties: { type: 'nope' } } } })])).toThrow(
      /plan "shop", events\["X"\]\.properties/,
    );
  });

  it('hostile values: numbers as strings, unicode names, nested arrays', () => {
    const stage = new PlanStage([
      TrackingPlan.parse({
        name: 'h',
        onViolation: 'block',
        events: {
          'Café ☕': {
            properties: {
              type: 'object',
              properties: { items: { type: 'array', items: { type: 'array', items: { type: 'integer' } } } },
            },
          },
        },
      }),
    ]);
    const r = stage.run([
      pe({ event: 'Café ☕', properties: { items: [[1, 2], [3]] } }, 1),
      pe({ event: 'Café ☕', properties: { items: [[1, '2']] } }, 2),
      pe({ event: 'Café ☕', properties: { items: 'x'.repeat(100_000) } }, 3),
    ]);
    expect(r.pass.map((p) => p.record.offset)).toEqual([1]);
    expect(r.fail.map((f) => f.reason)).toEqual([
      'plan "h": /properties/items/0/1 must be integer',
      'plan "h": /properties/items must be array',
    ]);
  });
});
