import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Stripe from 'stripe';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { type Child, CliChildren, health, kill9, sleep } from './cli-child.js';
import { MINIMAL_CONFIG } from './helpers.js';

/**
 * A webhook's 200 means durable: `tributary start` runs as a child process and is killed
 * with SIGKILL while senders post signed Stripe deliveries. After a restart on the same data
 * folder, every delivery answered 200 is in `events`, once; the deliveries the senders then
 * retry (as Stripe does after a failure) are not stored twice.
 */

const ADMIN_TOKEN = 'webhook-crash-admin-token';
const SECRET = `whsec_${randomBytes(16).toString('hex')}`;
const SENDERS = 4;
const stripe = new Stripe('sk_test_unused');

let workDir: string;
let configPath: string;
let dataDir: string;
const cli = new CliChildren({
  get configPath() {
    return configPath;
  },
  get dataDir() {
    return dataDir;
  },
  adminToken: ADMIN_TOKEN,
});

beforeAll(() => {
  workDir = mkdtempSync(join(tmpdir(), 'tributary-webhook-crash-'));
  configPath = join(workDir, 'tributary.yaml');
  dataDir = join(workDir, 'data');
  // The child reads the secret from its environment, as `${ENV}` references are resolved.
  process.env.TRIB_TEST_STRIPE_SECRET = SECRET;
  writeFileSync(
    configPath,
    `${MINIMAL_CONFIG}  - id: stripe
    type: webhook
    verify: { kind: stripe, secret: "\${TRIB_TEST_STRIPE_SECRET}" }
    preset: stripe
query:
  maxRows: 1000000
`,
  );
});

afterAll(async () => {
  await cli.killAll();
  delete process.env.TRIB_TEST_STRIPE_SECRET;
  if (workDir) rmSync(workDir, { recursive: true, force: true });
});

function delivery(id: string): { body: string; signature: string } {
  const body = JSON.stringify({
    id,
    object: 'event',
    type: 'charge.succeeded',
    created: Math.floor(Date.now() / 1000),
    data: { object: { id: `ch_${id}`, amount: 1999, currency: 'usd', customer: `cus_${id.slice(-3)}` } },
  });
  // Signed at each attempt, as Stripe signs each delivery attempt anew.
  return { body, signature: stripe.webhooks.generateTestHeaderString({ payload: body, secret: SECRET }) };
}

async function post(url: string, id: string): Promise<number> {
  const d = delivery(id);
  const res = await fetch(`${url}/webhooks/stripe`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', 'stripe-signature': d.signature },
    body: d.body,
  });
  await res.text();
  return res.status;
}

it('stores every delivery answered 200 before a SIGKILL, once, and a retried one once', async () => {
  const first: Child = await cli.start(30_000);
  const acked: string[] = [];
  const inFlight = new Set<string>();
  let stop = false;
  const senders = Array.from({ length: SENDERS }, async (_, w) => {
    for (let seq = 0; !stop; seq++) {
      const id = `evt_crash_${w}_${seq}`;
      inFlight.add(id);
      try {
        if ((await post(first.url, id)) !== 200) throw new Error('not acknowledged');
        acked.push(id);
        inFlight.delete(id);
      } catch {
        return; // the server died with this delivery in flight: it stays in `inFlight`
      }
    }
  });
  while (acked.length < 200) await sleep(10);
  await kill9(first);
  stop = true;
  await Promise.all(senders);

  const second = await cli.start(30_000);
  // What was in flight at the kill is redelivered, and what was acknowledged once more too.
  for (const id of [...inFlight, ...acked.slice(0, 20)]) expect(await post(second.url, id)).toBe(200);
  for (;;) {
    const h = await health(second);
    if (h.loader.position >= h.log.endOffset) break;
    await sleep(50);
  }
  const res = await fetch(`${second.url}/admin/v1/query`, {
    method: 'POST',
    headers: { authorization: `Bearer ${ADMIN_TOKEN}`, 'content-type': 'application/json' },
    body: JSON.stringify({
      sql: "SELECT message_id, count(*) AS c FROM events WHERE source_id = 'stripe' GROUP BY 1",
    }),
  });
  const rows = ((await res.json()) as { rows: { message_id: string; c: number }[] }).rows;
  const counts = new Map(rows.map((r) => [r.message_id, Number(r.c)]));
  expect([...counts].filter(([, c]) => c !== 1)).toEqual([]);
  expect(acked.filter((id) => counts.get(id) !== 1)).toEqual([]);
  expect([...inFlight].filter((id) => counts.get(id) !== 1)).toEqual([]);
  expect(counts.size).toBe(new Set([...acked, ...inFlight]).size);
  await cli.killAll();
}, 120_000);
