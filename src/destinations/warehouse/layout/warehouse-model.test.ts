import { describe, expect, it } from 'vitest';
import { WarehouseModel } from './warehouse-model.js';

const event = (messageId: string, body: Record<string, unknown>) => ({
  sourceId: 'web',
  messageId,
  json: JSON.stringify({ messageId, receivedAt: '2026-11-20T10:00:00.000Z', ...body }),
});

describe('WarehouseModel', () => {
  it('names an event table that folds to a standard table apart, and says so in tracks.event', () => {
    const model = new WarehouseModel({ maxColumns: 1600 });
    const plan = model.plan([
      event('m-1', { type: 'track', userId: 'u', event: 'Tracks', properties: { a: 1 } }),
    ]);
    const tables = plan.tables.map((t) => t.table);
    expect(tables[0]).toBe('tracks');
    expect(tables[1]).toMatch(/^tracks_[0-9a-f]{8}$/);
    const tracks = plan.tables[0]!;
    const eventColumn = tracks.columns.findIndex((c) => c.name === 'event');
    expect(tracks.rows[0]![eventColumn]).toBe(tables[1]);
    expect(plan.names.filter((n) => n.kind === 'table').map((n) => [n.key, n.name])).toEqual([
      ['std:tracks', 'tracks'],
      ['event:Tracks', tables[1]],
    ]);
  });

  it('keeps the first of two rows with one id, and merges users rows of one batch', () => {
    const model = new WarehouseModel({ maxColumns: 1600 });
    const plan = model.plan([
      event('m-1', { type: 'track', userId: 'u', event: 'E', properties: { a: 1 } }),
      event('m-1', { type: 'track', userId: 'u', event: 'E', properties: { a: 2 } }),
      event('m-2', { type: 'identify', userId: 'u', traits: { plan: 'free', email: 'a@x.io' } }),
      event('m-3', { type: 'identify', userId: 'u', traits: { plan: 'pro' } }),
    ]);
    const e = plan.tables.find((t) => t.table === 'e')!;
    expect(e.rows).toHaveLength(1);
    expect(e.rows[0]![e.columns.findIndex((c) => c.name === 'a')]).toBe('1');
    const users = plan.tables.find((t) => t.table === 'users')!;
    const col = (name: string) => users.rows[0]![users.columns.findIndex((c) => c.name === name)];
    expect(users.rows).toHaveLength(1);
    expect([col('id'), col('plan'), col('email')]).toEqual(['u', 'pro', 'a@x.io']);
  });

  it("never puts a source's tables into DuckDB's main schema, where the embedded warehouse keeps events", () => {
    const model = new WarehouseModel({ maxColumns: 1600 });
    const plan = model.plan([
      { ...event('m-1', { type: 'track', userId: 'u', event: 'Events' }), sourceId: 'main' },
    ]);
    expect(plan.tables[0]!.schema).toMatch(/^main_[0-9a-f]{8}$/);
    expect(plan.tables[1]!.table).toBe('events');
  });

  it('plans the same, event by event, as in one call: changes, names, columns and rows', () => {
    const events = [
      event('m-1', { type: 'track', userId: 'u', event: 'E', properties: { a: 1 } }),
      event('m-1', { type: 'track', userId: 'u', event: 'E', properties: { a: 2 } }),
      event('m-2', { type: 'track', userId: 'u', event: 'E', properties: { a: 'text', b: true } }),
      event('m-3', { type: 'identify', userId: 'u', traits: { plan: 'free' } }),
      event('m-4', { type: 'identify', userId: 'u', traits: { plan: 'pro', seats: 3 } }),
      { ...event('m-5', { type: 'page', anonymousId: 'a', name: 'Home' }), sourceId: 'app' },
    ];
    const whole = new WarehouseModel({ maxColumns: 1600 }).plan(events);
    const planner = new WarehouseModel({ maxColumns: 1600 }).planner();
    for (const e of events) planner.add(e);
    const stepwise = planner.finish();
    expect(stepwise).toEqual(whole);
    expect(whole.tables.map((t) => `${t.schema}.${t.table}`)).toContain('app.pages');
  });
});
