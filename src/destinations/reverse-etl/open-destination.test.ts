import { describe, expect, it } from 'vitest';
import { z } from 'zod';
import type { StreamDestinationKind } from '../stream.js';
import { openFromConfig } from './open-destination.js';

/** A kind of the test's own: its connector records what it was created with. */
function kind(type: string, rows: boolean, created: unknown[]): StreamDestinationKind {
  return {
    delivery: 'stream',
    type,
    config: z.object({ id: z.string(), type: z.literal(type), url: z.string().default('http://x') }),
    capabilities: { batching: true, deletion: false, rows },
    async connector() {
      return {
        check: async () => ({ ok: true as const }),
        async create(config) {
          created.push(config);
          return {
            id: config.id,
            send: async (b) => b.map(() => ({ status: 'ok' as const })),
            close: async () => {},
          };
        },
      };
    },
  };
}

describe('openFromConfig', () => {
  const created: unknown[] = [];
  const kinds = new Map([
    ['webhook', kind('webhook', true, created)],
    ['events-only', kind('events-only', false, created)],
  ]);
  const open = openFromConfig(
    [
      { id: 'crm', type: 'webhook' },
      { id: 'feed', type: 'events-only' },
      { id: 'warehouse', type: 'duckdb' },
    ],
    (t) => kinds.get(t),
    { dataDir: '/tmp' },
  );

  it('creates the destination of the id through its kind, with its parsed configuration', async () => {
    const d = await open('crm');
    expect(d.id).toBe('crm');
    expect(created).toEqual([{ id: 'crm', type: 'webhook', url: 'http://x' }]);
  });

  it('refuses an unknown id, a kind that is not streaming, and one that takes no rows', async () => {
    await expect(open('nope')).rejects.toThrow('no destination "nope"');
    await expect(open('warehouse')).rejects.toThrow('not a streaming destination');
    await expect(open('feed')).rejects.toThrow('does not take reverse-ETL rows');
  });
});
