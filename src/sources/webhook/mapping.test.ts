import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { parseConfig } from '../../config/load.js';
import { toCurrencyUnits } from './currency.js';
import { checkWebhooks } from './index.js';
import { compilePath, compileTemplate, parsePath } from './json-path.js';
import { compileMapping } from './mapping.js';
import { GITHUB_RULES, STRIPE_RULES } from './presets.js';
import { MappingRule, WebhookSourceConfig } from './spec.js';

describe('paths', () => {
  it('reads dotted paths, indices, quoted keys and headers', () => {
    const input = {
      payload: { data: { object: { items: [{ id: 'a' }, { id: 'b' }], 'a.b': 1 } } },
      headers: { 'x-github-event': 'push' },
    };
    expect(compilePath('data.object.items[1].id')(input)).toBe('b');
    expect(compilePath('$.data.object.items[0].id')(input)).toBe('a');
    expect(compilePath('data.object["a.b"]')(input)).toBe(1);
    expect(compilePath('@X-GitHub-Event')(input)).toBe('push');
    expect(compilePath('data.object.items[5].id')(input)).toBeUndefined();
    expect(compilePath('data.missing.deeper')(input)).toBeUndefined();
  });

  it('refuses what is not a path', () => {
    for (const bad of ['', 'a..b', 'a.', '[x]', 'a[-1]', '@', '@bad header', 'a b']) {
      expect(parsePath(bad), bad).toBeUndefined();
    }
  });

  it('never reaches a prototype, and never throws, whatever the payload and path', () => {
    expect(compilePath('constructor')({ payload: {}, headers: {} })).toBeUndefined();
    expect(compilePath('__proto__')({ payload: {}, headers: {} })).toBeUndefined();
    expect(compilePath('a.toString')({ payload: { a: {} }, headers: {} })).toBeUndefined();
    fc.assert(
      fc.property(fc.jsonValue(), fc.string(), (payload, text) => {
        const path = parsePath(text);
        if (!path) return;
        const v = compilePath(text)({ payload, headers: {} });
        expect(typeof v === 'function').toBe(false);
      }),
    );
  });

  it('fills templates, leaving out what is missing', () => {
    const t = compileTemplate('{@x-github-event} {action}');
    expect(t({ payload: { action: 'opened' }, headers: { 'x-github-event': 'issues' } })).toBe(
      'issues opened',
    );
    expect(t({ payload: {}, headers: { 'x-github-event': 'push' } })).toBe('push');
    expect(t({ payload: { action: { nested: true } }, headers: {} })).toBe('');
  });
});

describe('currency units', () => {
  it('divides by the currency minor units, zero-decimal and three-decimal currencies included', () => {
    expect(toCurrencyUnits(1999, 'usd')).toBe(19.99);
    expect(toCurrencyUnits(1999, 'JPY')).toBe(1999);
    expect(toCurrencyUnits(500, 'krw')).toBe(500);
    expect(toCurrencyUnits(12345, 'kwd')).toBe(12.345);
    expect(toCurrencyUnits(10, 'eur')).toBe(0.1);
    expect(toCurrencyUnits('1999', 'usd')).toBeUndefined();
    expect(toCurrencyUnits(1999, 'dollars')).toBeUndefined();
  });
});

describe('rules', () => {
  const map = compileMapping([
    { when: { type: 'noise' }, ignore: true, type: 'track' },
    {
      when: { type: ['order.created', 'order.paid'], 'data.live': true },
      type: 'track',
      event: 'Order {type}',
      userId: ['data.user_id', 'data.customer.id'],
      email: 'data.email',
      externalIds: { shop_customer_id: 'data.customer.id' },
      traits: { plan: 'data.plan' },
      properties: { total: { path: 'data.total', currency: 'data.currency' }, source: { value: 'shop' } },
      timestamp: 'data.at',
    },
    {
      when: { type: 'customer.*' },
      type: 'identify',
      userId: 'data.id',
      email: 'data.email',
      traits: { n: 'data.n' },
    },
  ]);
  const run = (payload: unknown) => map({ payload, headers: {}, deliveryId: 'd1' });

  it('makes the first matching rule the event, with ids, email, external ids and converted amounts', () => {
    const out = run({
      type: 'order.paid',
      data: {
        live: true,
        customer: { id: 42 },
        email: 'a@b.c',
        plan: 'pro',
        total: 250,
        currency: 'usd',
        at: 1_700_000_000,
      },
    });
    expect(out).toEqual({
      kind: 'events',
      events: [
        {
          type: 'track',
          messageId: 'd1',
          event: 'Order order.paid',
          userId: '42',
          timestamp: '2023-11-14T22:13:20.000Z',
          properties: { total: 2.5, source: 'shop' },
          context: {
            traits: { plan: 'pro', email: 'a@b.c' },
            externalIds: [{ id: '42', type: 'shop_customer_id', collection: 'users', encoding: 'none' }],
          },
        },
      ],
    });
  });

  it('puts email in the traits of an identify; ignores, and says when nothing matches', () => {
    expect(run({ type: 'customer.updated', data: { id: 'c', email: 'x@y.z', n: 1 } })).toMatchObject({
      events: [{ type: 'identify', userId: 'c', traits: { n: 1, email: 'x@y.z' } }],
    });
    expect(run({ type: 'noise' })).toEqual({ kind: 'ignored' });
    expect(run({ type: 'order.paid', data: { live: false } })).toEqual({ kind: 'unmatched' });
    expect(run('not an object')).toEqual({ kind: 'unmatched' });
  });

  it('fails a payload whose event name comes out empty', () => {
    const m = compileMapping([{ type: 'track', event: '{name}' }]);
    expect(m({ payload: {}, headers: {}, deliveryId: 'd' })).toMatchObject({
      kind: 'failed',
      code: 'TRIB_ERR_WEBHOOK_MAPPING_INVALID',
    });
  });

  it('the presets are rules the configuration accepts', () => {
    for (const r of [...STRIPE_RULES, ...GITHUB_RULES])
      expect(MappingRule.safeParse(r).error).toBeUndefined();
  });
});

describe('configuration', () => {
  const config = (source: string) => `version: 1\nsources:\n${source}`;

  it('takes a secret only as an ${ENV} reference', () => {
    expect(() =>
      parseConfig(
        config('  - {id: s, type: webhook, preset: stripe, verify: {kind: stripe, secret: whsec_literal}}\n'),
        {},
      ),
    ).toThrow(/verify\.secret: a secret must be given as an environment reference/);
    const { config: c } = parseConfig(
      config('  - {id: s, type: webhook, preset: stripe, verify: {kind: stripe, secret: "${S}"}}\n'),
      { S: 'whsec_x' },
    );
    expect(c.sources[0]).toMatchObject({
      type: 'webhook',
      verify: { kind: 'stripe', secret: 'whsec_x', tolerance: 300_000 },
    });
  });

  it('needs a verify kind (none only when written), and a preset, rules or function', () => {
    expect(WebhookSourceConfig.safeParse({ id: 's', type: 'webhook', preset: 'github' }).success).toBe(false);
    expect(
      WebhookSourceConfig.safeParse({ id: 's', type: 'webhook', verify: { kind: 'none' } }).success,
    ).toBe(false);
    expect(
      WebhookSourceConfig.safeParse({
        id: 's',
        type: 'webhook',
        verify: { kind: 'none' },
        preset: 'github',
        function: { file: 'f.js' },
      }).success,
    ).toBe(false);
    expect(
      WebhookSourceConfig.safeParse({ id: 's', type: 'webhook', verify: { kind: 'none' }, preset: 'github' })
        .success,
    ).toBe(true);
    expect(
      WebhookSourceConfig.safeParse({
        id: 's',
        type: 'webhook',
        verify: { kind: 'none' },
        rules: [{ event: 'x {bad path}' }],
      }).success,
    ).toBe(false);
  });

  it('config check compiles a function file and names the source when it does not parse', () => {
    const dir = mkdtempSync(join(tmpdir(), 'tributary-webhook-check-'));
    try {
      writeFileSync(join(dir, 'ok.ts'), 'export default (i: { payload: unknown }) => null;');
      writeFileSync(join(dir, 'bad.js'), 'export default (i) => {');
      const source = (file: string) =>
        WebhookSourceConfig.parse({
          id: 'hook',
          type: 'webhook',
          verify: { kind: 'none' },
          function: { file },
        });
      expect(() => checkWebhooks([source('ok.ts')], dir)).not.toThrow();
      expect(() => checkWebhooks([source('bad.js')], dir)).toThrow(/sources\[hook\]\.function/);
      expect(() => checkWebhooks([source('missing.js')], dir)).toThrow(/sources\[hook\]\.function/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('lets several webhook sources sit beside http sources (write keys are checked among http sources only)', () => {
    const { config: c } = parseConfig(
      config(
        '  - {id: web, type: http, writeKey: k}\n  - {id: a, type: webhook, preset: github, verify: {kind: none}}\n  - {id: b, type: webhook, preset: github, verify: {kind: none}}\n',
      ),
      {},
    );
    expect(c.sources.map((s) => s.type)).toEqual(['http', 'webhook', 'webhook']);
  });
});
