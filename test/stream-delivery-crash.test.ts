import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CliChildren, kill9 } from './cli-child.js';
import { basicAuth, MINIMAL_CONFIG, WRITE_KEY } from './helpers.js';
import { HttpReceiver } from './http-receiver.js';

/**
 * `tributary start` with an http destination, killed with SIGKILL while it delivers a backlog:
 * after the restart every event acknowledged at collection reaches the receiver (which dedups
 * on the idempotency key), in order per user.
 */

const ADMIN_TOKEN = 'stream-crash-admin-token';
let workDir: string;
let receiver: HttpReceiver;
const cli = new CliChildren({
  get configPath() {
    return join(workDir, 'tributary.yaml');
  },
  get dataDir() {
    return join(workDir, 'data');
  },
  adminToken: ADMIN_TOKEN,
});

beforeAll(async () => {
  workDir = mkdtempSync(join(tmpdir(), 'tributary-stream-crash-'));
  // Slow enough that a backlog builds up in the delivery queue.
  receiver = await new HttpReceiver(() => ({ status: 200, delayMs: 8 })).start();
  writeFileSync(
    join(workDir, 'tributary.yaml'),
    `${MINIMAL_CONFIG}destinations:
  - id: warehouse
    type: duckdb
  - id: hook
    type: http
    url: ${receiver.url}/hook
    concurrency: 8
    timeout: 2s
    backoff: { initial: 50ms, max: 500ms }
`,
  );
});

afterAll(async () => {
  await cli.killAll();
  await receiver?.close();
  if (workDir) rmSync(workDir, { recursive: true, force: true });
});

describe('streaming delivery, killed with SIGKILL', () => {
  it('delivers every acknowledged event after the restart, in order per user', {
    timeout: 60_000,
  }, async () => {
    let child = await cli.start(20_000);
    const users = Array.from({ length: 20 }, (_, i) => `user-${i}`);
    const sent = new Map<string, string[]>(users.map((u) => [u, []]));
    const acked: string[] = [];
    for (let b = 0; b < 10; b++) {
      const batch = Array.from({ length: 100 }, (_, i) => {
        const userId = users[i % users.length]!;
        return { type: 'track', messageId: `c-${b}-${i}`, userId, event: 'Crash', properties: { b, i } };
      });
      const res = await fetch(`${child.url}/v1/batch`, {
        method: 'POST',
        headers: { authorization: basicAuth(WRITE_KEY), 'content-type': 'application/json' },
        body: JSON.stringify({ batch }),
      });
      expect(res.status).toBe(200);
      for (const e of batch) {
        acked.push(e.messageId);
        sent.get(e.userId)!.push(e.messageId);
      }
    }
    // Kill it in the middle of delivering the backlog.
    await receiver.waitFor(() => receiver.events.length >= 150, 20_000, 'the first deliveries');
    await kill9(child);
    const atKill = receiver.events.length;
    expect(atKill).toBeLessThan(acked.length);

    child = await cli.start(20_000);
    await receiver.waitFor(
      () => acked.every((id) => receiver.has(id)),
      40_000,
      'every acknowledged event after the restart',
    );
    const order = new Map<string, string[]>();
    for (const e of receiver.events)
      order.set(String(e.userId), [...(order.get(String(e.userId)) ?? []), String(e.messageId)]);
    expect(order).toEqual(sent);
    console.info(
      `killed with ${atKill} of ${acked.length} events delivered; ${receiver.duplicates} resent after the restart and deduplicated by the receiver`,
    );
    await kill9(child);
  });
});
