import { pino } from 'pino';
import { describe, expect, it } from 'vitest';
import type { AppendResult, EventLog, RawEvent } from '../src/log/event-log.js';
import { Metrics } from '../src/observe/metrics.js';
import { buildHttpApp } from '../src/server/http-app.js';
import type { UserQueries } from '../src/store/user-query.js';
import { basicAuth, startTestServer, WRITE_KEY } from './helpers.js';

/** A log whose storage fails, as a full disk or a broken file would. */
class FailingLog implements EventLog {
  readonly id = 'failing';
  calls = 0;
  async append(_records: readonly RawEvent[]): Promise<AppendResult> {
    this.calls++;
    throw new Error('IO Error: No space left on device');
  }
  consume(): never {
    throw new Error('not used');
  }
  endOffset() {
    return 0;
  }
  async committedOffset() {
    return 0;
  }
  async close() {}
}

describe('fault paths', () => {
  it('answers 503 with a stable code when the log cannot store the events, and acknowledges nothing', async () => {
    const log = new FailingLog();
    const source = { id: 'web', type: 'http' as const, writeKey: WRITE_KEY, enabled: true };
    const metrics = new Metrics({ endOffset: () => 0, loaded: () => 0 });
    const app = await buildHttpApp({
      sources: [source],
      sourcesByWriteKey: new Map([[WRITE_KEY, source]]),
      log,
      queries: {} as UserQueries,
      metrics,
      adminToken: 't',
      logger: pino({ level: 'silent' }),
      observer: {
        received: (src, n) => metrics.received.inc({ source: src }, n),
        accepted: (src, n) => metrics.accepted.inc({ source: src }, n),
        rejected: (src, code, n) => metrics.rejected.inc({ source: src, code }, n),
      },
      health: () => ({}),
    });
    const res = await app.inject({
      method: 'POST',
      url: '/v1/batch',
      headers: { authorization: basicAuth(WRITE_KEY) },
      payload: JSON.stringify({ batch: [{ type: 'track', event: 'X', userId: 'u' }] }),
    });
    expect(res.statusCode).toBe(503);
    expect(res.json()).toMatchObject({ success: false, code: 'TRIB_ERR_LOG_APPEND_FAILED' });
    expect(log.calls).toBe(1);
    // Nothing counts as received or accepted; the refusal is counted by its code.
    const text = await metrics.registry.metrics();
    expect(text).not.toMatch(/^tributary_events_received_total\{/m);
    expect(text).not.toMatch(/^tributary_events_accepted_total\{/m);
    expect(text).toMatch(/^tributary_requests_refused_total\{code="TRIB_ERR_LOG_APPEND_FAILED"\} 1$/m);
    await app.close();
  });

  it('graceful shutdown: every request answered 200 before close is stored after a restart', async () => {
    const first = await startTestServer();
    const acked: string[] = [];
    let refused = 0;
    let stop = false;
    let n = 0;
    const sender = async () => {
      while (!stop) {
        const messageId = `shutdown-${n++}`;
        try {
          const res = await fetch(`${first.url}/v1/batch`, {
            method: 'POST',
            headers: { authorization: basicAuth(WRITE_KEY) },
            body: JSON.stringify({ batch: [{ type: 'track', event: 'S', userId: 'u', messageId }] }),
          });
          await res.arrayBuffer();
          if (res.status === 200) acked.push(messageId);
          else {
            refused++;
            stop = true;
          }
        } catch {
          refused++;
          stop = true;
        }
      }
    };
    const senders = Array.from({ length: 8 }, sender);
    const deadline = Date.now() + 10_000;
    while (acked.length < 100 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 2));
    // Requests are in flight now: close must answer them (200 once durable) before it stops.
    await first.close();
    stop = true;
    await Promise.all(senders);
    expect(acked.length).toBeGreaterThanOrEqual(100);
    expect(refused).toBeGreaterThan(0);

    const second = await startTestServer({ dataDir: first.dataDir });
    try {
      await second.settle();
      const rows = await second.query(`SELECT message_id FROM events WHERE message_id LIKE 'shutdown-%'`);
      const stored = new Set(rows.map((r) => String(r.message_id)));
      for (const id of acked) expect(stored.has(id), id).toBe(true);
      expect(rows.length).toBe(stored.size);
    } finally {
      await second.stop();
    }
  });
});
