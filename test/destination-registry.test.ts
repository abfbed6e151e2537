import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DestinationConfig } from '../src/config/destinations-schema.js';
import type { CheckResult } from '../src/destinations/connector.js';
import { DESTINATION_KINDS, destinationKind } from '../src/destinations/registry.js';
import { pgUnreachable, type ScratchDatabase, scratchDatabase } from './pg.js';

/**
 * The registry, and what `check` of each kind says beyond the codes the conformance suite
 * (`conformance/destination-conformance.ts`) asserts: which paths it accepts, and messages
 * that name the address, user or database at fault.
 */

async function check(entry: Record<string, unknown>, dataDir: string): Promise<CheckResult> {
  const config = DestinationConfig.parse(entry);
  const connector = await destinationKind(config.type).connector();
  return (connector.check as (c: unknown, ctx: { dataDir: string }) => Promise<CheckResult>)(config, {
    dataDir,
  });
}

/** A local port nothing listens on: one the system gave out and that was closed again. */
async function closedPort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const { port } = server.address() as { port: number };
  await new Promise<void>((r) => server.close(() => r()));
  return port;
}

let dir: string;
beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'trib-dest-check-'));
  writeFileSync(join(dir, 'a-file'), 'x');
  mkdirSync(join(dir, 'a-folder'));
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe('the destination registry', () => {
  it('lists each kind once, its spec parsing entries of its own type', () => {
    const types = DESTINATION_KINDS.map((k) => k.type);
    expect(new Set(types).size).toBe(types.length);
    expect(types).toEqual([
      'duckdb',
      'postgres',
      'parquet',
      'http',
      'postgres-upsert',
      'mysql-upsert',
      'amqp',
      'mqtt',
      'redis-streams',
    ]);
    const entries: Record<string, Record<string, unknown>> = {
      duckdb: { id: 'd', type: 'duckdb' },
      postgres: { id: 'p', type: 'postgres', connectionString: 'postgres://u@h/db' },
      parquet: { id: 'l', type: 'parquet', path: 'lake' },
      http: { id: 'h', type: 'http', url: 'https://example.com/hook' },
      'postgres-upsert': {
        id: 'pu',
        type: 'postgres-upsert',
        connectionString: 'postgres://u@h/db',
        table: 'contacts',
        columns: { user_id: 'userId' },
        key: ['user_id'],
      },
      'mysql-upsert': {
        id: 'mu',
        type: 'mysql-upsert',
        host: 'h',
        database: 'db',
        table: 'contacts',
        columns: { user_id: 'userId' },
        key: ['user_id'],
      },
      amqp: { id: 'a', type: 'amqp', connectionString: 'amqp://h', exchange: 'events' },
      mqtt: { id: 'm', type: 'mqtt', host: 'h', topic: 'events/{type}' },
      'redis-streams': { id: 'r', type: 'redis-streams', host: 'h', stream: 'events' },
    };
    for (const kind of DESTINATION_KINDS) {
      expect(DestinationConfig.parse(entries[kind.type]).type).toBe(kind.type);
      expect(kind.config.safeParse(entries[kind.type]).success).toBe(true);
    }
    expect(() => destinationKind('kafka')).toThrow('unknown destination type "kafka"');
  });
});

describe('duckdb check', () => {
  it('accepts the embedded file, and a new file in an existing folder', async () => {
    expect(await check({ id: 'd', type: 'duckdb' }, dir)).toEqual({ ok: true });
    expect(await check({ id: 'd', type: 'duckdb', path: 'sub/new.duckdb' }, dir)).toEqual({ ok: true });
  });
});

describe('parquet check', () => {
  it('accepts an existing or a new folder, and names the path it cannot write', async () => {
    expect(await check({ id: 'l', type: 'parquet', path: 'a-folder' }, dir)).toEqual({ ok: true });
    expect(await check({ id: 'l', type: 'parquet', path: 'new/lake' }, dir)).toEqual({ ok: true });
    const file = await check({ id: 'l', type: 'parquet', path: 'a-file' }, dir);
    expect(file.ok || file.message).toContain(join(dir, 'a-file'));
  });
});

const pgDown = await pgUnreachable();
describe.skipIf(pgDown !== undefined)(`postgres check${pgDown ? ` (skipped: ${pgDown})` : ''}`, () => {
  let db: ScratchDatabase;
  beforeAll(async () => {
    db = await scratchDatabase('dest_check');
  });
  afterAll(() => db?.drop());

  it('connects to the database of a right configuration', async () => {
    expect(await check({ id: 'p', type: 'postgres', connectionString: db.url }, dir)).toEqual({ ok: true });
    expect(
      await check(
        { id: 'p', type: 'postgres', host: '127.0.0.1', port: 5432, user: 'postgres', database: db.name },
        dir,
      ),
    ).toEqual({ ok: true });
  });

  it('reports a port nothing listens on, and a host that does not resolve, as unreachable', async () => {
    const port = await closedPort();
    const wrongPort = await check(
      { id: 'p', type: 'postgres', host: '127.0.0.1', port, user: 'postgres', database: db.name },
      dir,
    );
    expect(wrongPort).toMatchObject({ ok: false, code: 'TRIB_ERR_DEST_CHECK_UNREACHABLE' });
    expect(wrongPort.ok || wrongPort.message).toContain(`127.0.0.1:${port}`);
    const wrongHost = await check(
      {
        id: 'p',
        type: 'postgres',
        connectionString: `postgres://postgres@no-such-host.invalid:5432/${db.name}`,
      },
      dir,
    );
    expect(wrongHost).toMatchObject({ ok: false, code: 'TRIB_ERR_DEST_CHECK_UNREACHABLE' });
  });

  it('reports a user the server refuses, and a database that does not exist, with their codes', async () => {
    const user = await check(
      { id: 'p', type: 'postgres', host: '127.0.0.1', user: 'no_such_role_x', database: db.name },
      dir,
    );
    expect(user).toMatchObject({ ok: false, code: 'TRIB_ERR_DEST_CHECK_AUTH' });
    expect(user.ok || user.message).toContain('no_such_role_x');
    const database = await check({ id: 'p', type: 'postgres', connectionString: `${db.url}_missing` }, dir);
    expect(database).toMatchObject({ ok: false, code: 'TRIB_ERR_DEST_CHECK_DATABASE' });
    expect(database.ok || database.message).toContain(`${db.name}_missing`);
  });
});
