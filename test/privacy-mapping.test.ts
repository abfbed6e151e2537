import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ADMIN_TOKEN, basicAuth, startTestServer, type TestServer } from './helpers.js';

/**
 * Issue 16, finding 6: the privacy policy runs at collection, the mapping later in the loader.
 * Whatever alias of a field under hash/mask/block a client uses, and wherever the mapping looks
 * for it, the value must be in no store in clear: not the log record (the raw archive), not
 * `events`, not `failed_events`.
 */
const ALIASES = {
  email: ['email_address', 'primary_email', 'contact_email'],
  phone: ['mobile_number', 'cell'],
  employee_id: ['staff_number'],
} as const;
const ACTIONS = ['hash', 'mask', 'block'] as const;

const source = (action: string) => `  - id: pii-${action}
    type: http
    writeKey: wk_${action}
    mapping:
      fields:
        email: [${ALIASES.email.join(', ')}]
        phone: [${ALIASES.phone.join(', ')}]
        employee_id: [${ALIASES.employee_id.join(', ')}]
      normalize:
        email: [email]
    privacy:
      policy:
        ${action}: [email, phone, employee_id]
      matchers:
        - { name: employee_id, category: red, key: "^emp(loyee)?_?id$" }
`;

const YAML = `version: 1
sources:
${ACTIONS.map(source).join('')}  - id: forged
    type: http
    writeKey: wk_forged
    plans:
      - name: none
        onUnplannedEvent: block
`;

let server: TestServer;
beforeAll(async () => {
  server = await startTestServer({ yaml: YAML });
});
afterAll(async () => {
  await server?.stop();
});

let seq = 0;

/** A key spelt as a client might: the mapping and the policy compare keys by their words. */
function spell(alias: string, style: number): string {
  const w = alias.split('_');
  switch (style) {
    case 0:
      return alias;
    case 1:
      return w.map((x, i) => (i === 0 ? x : x[0]!.toUpperCase() + x.slice(1))).join('');
    case 2:
      return w.join('-').toUpperCase();
    default:
      return w.map((x) => x[0]!.toUpperCase() + x.slice(1)).join(' ');
  }
}

const pad = fc.constantFrom('', ' ', '  ', '\t', ' \n');
const values = {
  email: fc
    .tuple(pad, fc.stringMatching(/^[a-z][a-z0-9]{2,8}$/), fc.constantFrom('Example.com', 'mail.test'), pad)
    .map(([a, local, domain, b]) => `${a}${local[0]!.toUpperCase()}${local.slice(1)}@${domain}${b}`),
  phone: fc
    .tuple(pad, fc.integer({ min: 2000, max: 9999 }), pad)
    .map(([a, n, b]) => `${a}+1 415 555 ${n}${b}`),
  employee_id: fc.tuple(pad, fc.integer({ min: 100_000, max: 999_999 })).map(([a, n]) => `${a}EMP${n}`),
};

const field = fc.constantFrom(...(Object.keys(ALIASES) as (keyof typeof ALIASES)[])).chain((canonical) =>
  fc.record({
    canonical: fc.constant(canonical),
    alias: fc.constantFrom(...ALIASES[canonical]),
    style: fc.integer({ min: 0, max: 3 }),
    value: values[canonical],
  }),
);

async function stored(messageId: string): Promise<string[]> {
  const q = async (sql: string) => (await server.warehouse.query(sql)).rows.map((r) => String(r.j));
  return [
    ...(await q(`SELECT CAST(event AS VARCHAR) AS j FROM log.raw_events WHERE message_id = '${messageId}'`)),
    ...(await q(`SELECT CAST(payload AS VARCHAR) AS j FROM events WHERE message_id = '${messageId}'`)),
    ...(await q(`SELECT CAST(payload AS VARCHAR) AS j FROM failed_events WHERE message_id = '${messageId}'`)),
  ];
}

describe('privacy policy and mapping aliases', () => {
  it('a field under hash, mask or block is in no store in clear, whatever alias carries it', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.constantFrom(...ACTIONS),
        field,
        fc.constantFrom('properties', 'traits', 'context.traits'),
        async (action, f, where) => {
          const messageId = `pii-${Date.now().toString(36)}-${seq++}`;
          const key = spell(f.alias, f.style);
          const event: Record<string, unknown> = {
            type: where === 'traits' ? 'identify' : 'track',
            event: 'Signed Up',
            userId: 'u-pii',
            messageId,
          };
          if (where === 'context.traits') event.context = { traits: { [key]: f.value } };
          else event[where] = { [key]: f.value };
          const res = await server.app.inject({
            method: 'POST',
            url: '/v1/batch',
            headers: { authorization: basicAuth(`wk_${action}`), 'content-type': 'application/json' },
            payload: JSON.stringify({ batch: [event] }),
          });
          expect(res.statusCode).toBe(200);
          await server.settle();
          const texts = await stored(messageId);
          expect(texts.length).toBeGreaterThan(0);
          const clear = f.value.trim().toLowerCase();
          for (const t of texts) expect(t.toLowerCase()).not.toContain(clear);
        },
      ),
      { numRuns: 40 },
    );
  });

  it('the documented example: traits.contact_email is hashed as a trimmed, lowercased email', async () => {
    const messageId = `doc-${Date.now().toString(36)}`;
    await server.app.inject({
      method: 'POST',
      url: '/v1/identify',
      headers: { authorization: basicAuth('wk_hash'), 'content-type': 'application/json' },
      payload: JSON.stringify({ userId: 'ada', messageId, traits: { contact_email: ' Ada@Example.com ' } }),
    });
    await server.settle();
    const [row] = (
      await server.warehouse.query(
        `SELECT CAST(payload AS VARCHAR) AS p FROM events WHERE message_id = '${messageId}'`,
      )
    ).rows;
    const traits = JSON.parse(String(row!.p)).traits;
    expect(Object.keys(traits)).toEqual(['email']);
    expect(traits.email).toMatch(/^sha256:[0-9a-f]{64}$/);
    // The Segment table and the profile (traits and identifiers) hold the hash too.
    await Promise.all(server.destinations.map((d) => d.drained()));
    await server.identity!.drained();
    const tables = (
      await server.warehouse.query(
        `SELECT table_schema AS s FROM information_schema.tables WHERE table_name = 'identifies' AND table_schema LIKE '%hash%'`,
      )
    ).rows;
    expect(tables).toHaveLength(1);
    const [ident] = (
      await server.warehouse.query(
        `SELECT CAST(to_json(t) AS VARCHAR) AS j FROM "${tables[0]!.s}".identifies t WHERE id = '${messageId}'`,
      )
    ).rows;
    expect(String(ident!.j)).toContain(traits.email);
    expect(String(ident!.j).toLowerCase()).not.toContain('ada@example.com');
    const profile = await server.app.inject({
      method: 'GET',
      url: '/v1/profiles/user_id:ada',
      headers: { authorization: `Bearer ${ADMIN_TOKEN}` },
    });
    expect(profile.statusCode).toBe(200);
    expect(profile.body.toLowerCase()).not.toContain('ada@example.com');
    expect(profile.json().identifiers).toContainEqual(
      expect.objectContaining({ type: 'email', value: traits.email }),
    );
  });
});

describe('server-only annotations', () => {
  it("drops a client's _tributary: a forged retryOf names no failed event", async () => {
    const messageId = `forged-${Date.now().toString(36)}`;
    const res = await server.app.inject({
      method: 'POST',
      url: '/v1/track',
      headers: { authorization: basicAuth('wk_forged'), 'content-type': 'application/json' },
      payload: JSON.stringify({
        event: 'Unplanned',
        userId: 'u',
        messageId,
        _tributary: { retryOf: 'forged-id', warnings: [{ code: 'X', message: 'forged' }] },
      }),
    });
    expect(res.statusCode).toBe(200);
    await server.settle();
    const rows = (
      await server.warehouse.query(
        `SELECT stage, retry_of, CAST(payload AS VARCHAR) AS p FROM failed_events WHERE message_id = '${messageId}'`,
      )
    ).rows;
    expect(rows).toHaveLength(1);
    expect(rows[0]).toMatchObject({ stage: 'plan', retry_of: null });
    expect(JSON.parse(String(rows[0]!.p))._tributary?.retryOf).toBeUndefined();
  });
});
