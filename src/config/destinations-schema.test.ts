import { describe, expect, it } from 'vitest';
import type { TributaryError } from '../errors.js';
import { hasLiteralPassword } from './destinations-schema.js';
import { parseConfig } from './load.js';

const BASE = 'version: 1\nsources:\n  - id: web\n    type: http\n    writeKey: wk_web_123\n';

function refused(yaml: string, env: Record<string, string> = {}): string {
  try {
    parseConfig(yaml, env);
  } catch (err) {
    expect((err as TributaryError).code).toBe('TRIB_ERR_CONFIG_INVALID');
    return (err as Error).message;
  }
  throw new Error('expected the configuration to be refused');
}

describe('destinations configuration', () => {
  it('defaults to the Segment tables in the embedded DuckDB warehouse', () => {
    const { config } = parseConfig(BASE, {});
    expect(config.destinations).toEqual([
      {
        id: 'warehouse',
        type: 'duckdb',
        enabled: true,
        interval: 1000,
        maxBatch: 10_000,
        startOver: false,
        schema: '{source}',
        maxColumns: 1600,
      },
    ]);
    expect(parseConfig(`${BASE}destinations: []\n`, {}).config.destinations).toEqual([]);
  });

  it('reads every destination type, with the password of PostgreSQL from the environment', () => {
    const yaml = `${BASE}destinations:
  - id: pg
    type: postgres
    connectionString: postgres://loader:\${PG_PASSWORD}@db:5432/analytics
    interval: 500ms
  - id: pg2
    type: postgres
    host: db
    database: analytics
    user: loader
    password: \${PG_PASSWORD}
    schema: seg_{source}
  - id: lake
    type: parquet
    path: /data/lake
`;
    const { config } = parseConfig(yaml, { PG_PASSWORD: 's3cret' });
    expect(config.destinations[0]).toMatchObject({
      type: 'postgres',
      connectionString: 'postgres://loader:s3cret@db:5432/analytics',
      interval: 500,
    });
    expect(config.destinations[1]).toMatchObject({ password: 's3cret', port: 5432, schema: 'seg_{source}' });
    expect(config.destinations[2]).toMatchObject({ type: 'parquet', path: '/data/lake' });
  });

  it('refuses a literal password, a connection without a place, duplicate ids and unknown types', () => {
    expect(
      refused(
        `${BASE}destinations:\n  - id: pg\n    type: postgres\n    connectionString: postgres://u:pw@db/x\n`,
      ),
    ).toContain('destinations[0].connectionString: the password must be given as an environment reference');
    expect(
      refused(
        `${BASE}destinations:\n  - id: pg\n    type: postgres\n    host: db\n    database: x\n    password: pw\n`,
      ),
    ).toContain('destinations[0].password: a secret must be given as an environment reference');
    expect(refused(`${BASE}destinations:\n  - id: pg\n    type: postgres\n    user: u\n`)).toContain(
      'give connectionString, or host and database',
    );
    expect(
      refused(
        `${BASE}destinations:\n  - id: a\n    type: duckdb\n  - id: a\n    type: parquet\n    path: l\n`,
      ),
    ).toContain('destinations[1].id: duplicate destination id "a"');
    expect(refused(`${BASE}destinations:\n  - id: a\n    type: bigquery\n`)).toContain(
      'destinations[0].type',
    );
    expect(refused(`${BASE}destinations:\n  - id: a\n    type: duckdb\n    interval: soon\n`)).toContain(
      'destinations[0].interval',
    );
  });

  it('tells a password reference from a literal one in a connection string', () => {
    expect(hasLiteralPassword('postgres://u:pw@h/db')).toBe(true);
    expect(hasLiteralPassword('postgres://u:${PW}@h/db')).toBe(false);
    expect(hasLiteralPassword('postgres://u@h/db')).toBe(false);
    expect(hasLiteralPassword('postgres://h:5432/db')).toBe(false);
  });
});
