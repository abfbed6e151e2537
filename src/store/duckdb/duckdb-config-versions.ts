import type { DuckDBConnection, DuckDBInstance } from '@duckdb/node-api';
import { TributaryError } from '../../errors.js';
import { Turns } from '../../platform/async/turns.js';
import {
  CONFIG_VERSION_COLUMNS,
  type ConfigVersion,
  type ConfigVersionStore,
  type ConfigVersionSummary,
  configVersionOfRow,
  type NewConfigVersion,
  summaryOf,
} from '../config-versions.js';

const TABLE = '_tributary.config_versions';

/**
 * `config_versions` in the embedded warehouse file, on a connection of its own: a version is
 * stored in one transaction that reads the latest number first, and this process's changes
 * take turns (DuckDB has one process per file).
 */
export class DuckDBConfigVersions implements ConfigVersionStore {
  private readonly turns = new Turns();

  private constructor(private readonly conn: DuckDBConnection) {}

  static async open(instance: DuckDBInstance): Promise<DuckDBConfigVersions> {
    const conn = await instance.connect();
    await conn.run('CREATE SCHEMA IF NOT EXISTS _tributary');
    await conn.run(`CREATE TABLE IF NOT EXISTS ${TABLE} (
      n BIGINT PRIMARY KEY,
      stored_at TIMESTAMPTZ NOT NULL,
      author VARCHAR NOT NULL,
      message VARCHAR NOT NULL,
      origin VARCHAR NOT NULL,
      file_hash VARCHAR,
      yaml VARCHAR NOT NULL)`);
    return new DuckDBConfigVersions(conn);
  }

  appendConfigVersion(v: NewConfigVersion, expectLatest?: number): Promise<ConfigVersion> {
    return this.turns.run(async () => {
      await this.conn.run('BEGIN TRANSACTION');
      try {
        const latest = Number(
          (await this.conn.runAndReadAll(`SELECT coalesce(max(n), 0) FROM ${TABLE}`)).getRows()[0]![0],
        );
        if (expectLatest !== undefined && latest !== expectLatest)
          throw new TributaryError('TRIB_ERR_CONFIG_VERSION_CONFLICT', [latest, expectLatest]);
        const at = new Date();
        await this.conn.run(
          `INSERT INTO ${TABLE} (${CONFIG_VERSION_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7)`,
          [latest + 1, at.toISOString(), v.author, v.message, v.origin, v.fileHash ?? null, v.yaml],
        );
        await this.conn.run('COMMIT');
        return {
          n: latest + 1,
          at: at.toISOString(),
          author: v.author,
          message: v.message,
          origin: v.origin,
          fileHash: v.fileHash ?? null,
          yaml: v.yaml,
        };
      } catch (err) {
        await this.conn.run('ROLLBACK').catch(() => undefined);
        throw err;
      }
    });
  }

  private async rows(where: string, values: (string | number)[] = []): Promise<ConfigVersion[]> {
    const r = await this.conn.runAndReadAll(
      `SELECT ${CONFIG_VERSION_COLUMNS.replace('stored_at,', 'CAST(stored_at AS VARCHAR) AS stored_at,')} FROM ${TABLE} ${where}`,
      values,
    );
    return (r.getRowObjectsJS() as Record<string, unknown>[]).map(configVersionOfRow);
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
    return (await this.rows(`ORDER BY n DESC LIMIT ${l}`)).map(summaryOf);
  }

  close(): void {
    this.conn.closeSync();
  }
}
