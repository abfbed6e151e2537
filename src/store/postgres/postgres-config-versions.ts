import type pg from 'pg';
import { TributaryError } from '../../errors.js';
import { advisoryXactLock } from '../../platform/postgres/advisory-locks.js';
import {
  CONFIG_VERSION_COLUMNS,
  type ConfigVersion,
  type ConfigVersionStore,
  type ConfigVersionSummary,
  configVersionOfRow,
  type NewConfigVersion,
  summaryOf,
} from '../config-versions.js';

/** The table, in the state schema `s` (an identifier, quoted already). */
export function configVersionsSchemaSql(s: string): string[] {
  return [
    `CREATE TABLE IF NOT EXISTS ${s}.config_versions (
      n bigint PRIMARY KEY,
      stored_at timestamptz NOT NULL DEFAULT now(),
      author text NOT NULL,
      message text NOT NULL,
      origin text NOT NULL,
      file_hash text,
      yaml text NOT NULL)`,
  ];
}

/**
 * `config_versions` in the state database. Processes of one workspace store versions one at
 * a time: an advisory lock held to the commit orders them, so the number read is the latest.
 */
export class PostgresConfigVersions implements ConfigVersionStore {
  constructor(
    private readonly pool: pg.Pool,
    /** The schema, quoted. */
    private readonly s: string,
    private readonly transaction: <T>(work: (c: pg.PoolClient) => Promise<T>) => Promise<T>,
  ) {}

  appendConfigVersion(v: NewConfigVersion, expectLatest?: number): Promise<ConfigVersion> {
    return this.transaction(async (c) => {
      await advisoryXactLock(c, `config-versions:${this.s}`);
      const r = await c.query<{ latest: string }>(
        `SELECT coalesce(max(n), 0) AS latest FROM ${this.s}.config_versions`,
      );
      const latest = Number(r.rows[0]!.latest);
      if (expectLatest !== undefined && latest !== expectLatest)
        throw new TributaryError('TRIB_ERR_CONFIG_VERSION_CONFLICT', [latest, expectLatest]);
      const row = await c.query(
        `INSERT INTO ${this.s}.config_versions (n, author, message, origin, file_hash, yaml)
         VALUES ($1, $2, $3, $4, $5, $6) RETURNING ${CONFIG_VERSION_COLUMNS}`,
        [latest + 1, v.author, v.message, v.origin, v.fileHash ?? null, v.yaml],
      );
      return configVersionOfRow(row.rows[0] as Record<string, unknown>);
    });
  }

  private async rows(where: string, values: unknown[] = []): Promise<ConfigVersion[]> {
    const r = await this.pool.query(
      `SELECT ${CONFIG_VERSION_COLUMNS} FROM ${this.s}.config_versions ${where}`,
      values,
    );
    return (r.rows as Record<string, unknown>[]).map(configVersionOfRow);
  }

  async configVersion(n: number): Promise<ConfigVersion | undefined> {
    if (!Number.isSafeInteger(n)) return undefined;
    return (await this.rows('WHERE n = $1', [n]))[0];
  }

  async latestConfigVersion(): Promise<ConfigVersion | undefined> {
    return (await this.rows('ORDER BY n DESC LIMIT 1'))[0];
  }

  async latestFileConfigVersion(): Promise<ConfigVersion | undefined> {
    return (await this.rows("WHERE origin = 'file' ORDER BY n DESC LIMIT 1"))[0];
  }

  async listConfigVersions(limit = 100): Promise<ConfigVersionSummary[]> {
    const l = Math.max(1, Math.min(10_000, Math.trunc(limit) || 100));
    return (await this.rows('ORDER BY n DESC LIMIT $1', [l])).map(summaryOf);
  }
}
