import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DuckDBInstance } from '@duckdb/node-api';
import { afterAll, describe, expect, it } from 'vitest';
import { TributaryError } from '../src/errors.js';
import { DuckDBStore } from '../src/store/duckdb/duckdb-store.js';
import { PostgresStore } from '../src/store/postgres/postgres-store.js';
import type { Store } from '../src/store/store.js';
import { pgUnreachable, type ScratchDatabase, scratchDatabase } from './pg.js';

interface Harness {
  open(): Promise<Store>;
  cleanup(): Promise<void>;
}

const pgProblem = await pgUnreachable();
let db: ScratchDatabase | undefined;
afterAll(async () => {
  await db?.drop();
});

const adapters: [string, () => Promise<Harness>][] = [
  [
    'duckdb',
    async () => {
      const dir = mkdtempSync(join(tmpdir(), 'trib-cfgv-'));
      const instance = await DuckDBInstance.create(join(dir, 'warehouse.duckdb'));
      return {
        open: () => DuckDBStore.open(instance),
        async cleanup() {
          instance.closeSync();
          rmSync(dir, { recursive: true, force: true });
        },
      };
    },
  ],
  [
    'postgres',
    async () => {
      db ??= await scratchDatabase('trib_cfgv');
      const schema = `cfgv_${Math.random().toString(16).slice(2, 10)}`;
      const url = db.url;
      return {
        open: () => PostgresStore.open({ url, schema, maxConnections: 4 }),
        async cleanup() {},
      };
    },
  ],
];

for (const [name, harness] of adapters) {
  const skip = name === 'postgres' && pgProblem !== undefined;
  describe.skipIf(skip)(
    `config_versions: ${name}${skip ? ` (PostgreSQL unreachable: ${pgProblem})` : ''}`,
    () => {
      it('numbers versions from 1, keeps author, message, origin, file hash and text, newest first', async () => {
        const h = await harness();
        const store = await h.open();
        try {
          expect(await store.latestConfigVersion()).toBeUndefined();
          const v1 = await store.appendConfigVersion(
            {
              author: 'file',
              message: 'read from a.yaml',
              origin: 'file',
              fileHash: 'h1',
              yaml: 'version: 1\n',
            },
            0,
          );
          expect(v1).toMatchObject({ n: 1, author: 'file', origin: 'file', fileHash: 'h1' });
          const v2 = await store.appendConfigVersion({
            author: 'admin-token',
            message: 'PATCH sources/web',
            origin: 'api',
            yaml: 'version: 1\n# é ${ENV} \u2028\n',
          });
          expect(v2.n).toBe(2);
          expect(await store.configVersion(2)).toEqual(v2);
          expect((await store.latestConfigVersion())?.n).toBe(2);
          expect((await store.latestFileConfigVersion())?.n).toBe(1);
          expect(await store.configVersion(7)).toBeUndefined();
          const list = await store.listConfigVersions();
          expect(list.map((v) => [v.n, v.origin, v.fileHash])).toEqual([
            [2, 'api', null],
            [1, 'file', 'h1'],
          ]);
          expect(list[0]).not.toHaveProperty('yaml');
          expect(Date.parse(list[0]!.at)).toBeGreaterThanOrEqual(Date.parse(list[1]!.at));
        } finally {
          await store.close();
          await h.cleanup();
        }
      });

      it('stores nothing when the latest version is not the one expected; of concurrent appends against one version, one wins', async () => {
        const h = await harness();
        const store = await h.open();
        try {
          await store.appendConfigVersion({ author: 'a', message: 'm', origin: 'file', yaml: 'x: 1\n' });
          const stale = store.appendConfigVersion(
            { author: 'a', message: 'late', origin: 'api', yaml: 'x: 2\n' },
            0,
          );
          await expect(stale).rejects.toBeInstanceOf(TributaryError);
          await expect(stale).rejects.toMatchObject({
            code: 'TRIB_ERR_CONFIG_VERSION_CONFLICT',
            statusCode: 409,
          });
          const results = await Promise.allSettled(
            [1, 2, 3, 4].map((i) =>
              store.appendConfigVersion(
                { author: 'a', message: `c${i}`, origin: 'api', yaml: `x: ${i}\n` },
                1,
              ),
            ),
          );
          expect(results.filter((r) => r.status === 'fulfilled')).toHaveLength(1);
          expect((await store.listConfigVersions()).map((v) => v.n)).toEqual([2, 1]);
        } finally {
          await store.close();
          await h.cleanup();
        }
      });
    },
  );
}
