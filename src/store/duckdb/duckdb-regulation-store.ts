import type { DuckDBConnection, DuckDBInstance } from '@duckdb/node-api';
import type { Identity } from '../../governance/privacy/erasure.js';
import {
  overallStatus,
  type Regulation,
  type RegulationStep,
  type RegulationStore,
  type StepStatus,
} from '../../governance/privacy/regulation.js';
import { Turns } from '../../platform/async/turns.js';
import { eraseRows } from '../../platform/duckdb/duckdb-erase.js';

const SCHEMA_SQL = [
  'CREATE SCHEMA IF NOT EXISTS _tributary',
  `CREATE TABLE IF NOT EXISTS _tributary.regulations (
    id VARCHAR PRIMARY KEY,
    created_at TIMESTAMPTZ NOT NULL,
    identities VARCHAR NOT NULL,
    resolved VARCHAR NOT NULL)`,
  `CREATE TABLE IF NOT EXISTS _tributary.regulation_steps (
    regulation_id VARCHAR NOT NULL,
    store VARCHAR NOT NULL,
    status VARCHAR NOT NULL,
    reason VARCHAR,
    attempts INTEGER NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (regulation_id, store))`,
  `CREATE TABLE IF NOT EXISTS _tributary.suppressions (
    hash VARCHAR PRIMARY KEY,
    regulation_id VARCHAR NOT NULL,
    created_at TIMESTAMPTZ NOT NULL)`,
];

/** Regulations and the suppression list in the embedded warehouse file (`_tributary`). */
export class DuckDBRegulationStore implements RegulationStore {
  private readonly turns = new Turns();

  private constructor(private readonly conn: DuckDBConnection) {}

  static async open(instance: DuckDBInstance): Promise<DuckDBRegulationStore> {
    const conn = await instance.connect();
    for (const sql of SCHEMA_SQL) await conn.run(sql);
    return new DuckDBRegulationStore(conn);
  }

  private tx<T>(work: () => Promise<T>): Promise<T> {
    return this.turns.run(async () => {
      await this.conn.run('BEGIN TRANSACTION');
      try {
        const out = await work();
        await this.conn.run('COMMIT');
        return out;
      } catch (err) {
        await this.conn.run('ROLLBACK').catch(() => undefined);
        throw err;
      }
    });
  }

  async create(r: {
    id: string;
    identities: Identity[];
    steps: string[];
    suppress: string[];
  }): Promise<Regulation> {
    await this.tx(async () => {
      await this.conn.run('INSERT INTO _tributary.regulations VALUES ($1, now(), $2, $3)', [
        r.id,
        JSON.stringify(r.identities),
        '[]',
      ]);
      for (const store of r.steps)
        await this.conn.run(
          "INSERT INTO _tributary.regulation_steps VALUES ($1, $2, 'pending', NULL, 0, now())",
          [r.id, store],
        );
      await this.suppress(r.id, r.suppress);
    });
    return (await this.get(r.id))!;
  }

  private async suppress(id: string, hashes: readonly string[]): Promise<void> {
    if (hashes.length === 0) return;
    await this.conn.run(
      `INSERT OR IGNORE INTO _tributary.suppressions
       SELECT h, $1, now() FROM (SELECT unnest(CAST(CAST($2 AS JSON) AS VARCHAR[])) AS h)`,
      [id, JSON.stringify(hashes)],
    );
  }

  async get(id: string): Promise<Regulation | undefined> {
    return (await this.read('WHERE id = $1', [id], 1))[0];
  }

  list(limit: number): Promise<Regulation[]> {
    return this.read('', [], limit);
  }

  async unfinished(limit: number): Promise<Regulation[]> {
    const all = await this.read(
      `WHERE id IN (SELECT regulation_id FROM _tributary.regulation_steps WHERE status <> 'done')`,
      [],
      limit,
      'ASC',
    );
    return all;
  }

  private read(where: string, params: string[], limit: number, order = 'DESC'): Promise<Regulation[]> {
    return this.turns.run(async () => {
      const regs = (
        await this.conn.runAndReadAll(
          `SELECT id, strftime(created_at AT TIME ZONE 'UTC', '%Y-%m-%dT%H:%M:%S.%gZ'), identities, resolved
           FROM _tributary.regulations ${where} ORDER BY created_at ${order}, id LIMIT ${Math.trunc(limit)}`,
          params,
        )
      ).getRows();
      if (regs.length === 0) return [];
      const steps = (
        await this.conn.runAndReadAll(
          `SELECT regulation_id, store, status, reason, attempts,
                  strftime(updated_at AT TIME ZONE 'UTC', '%Y-%m-%dT%H:%M:%S.%gZ')
           FROM _tributary.regulation_steps WHERE list_contains(CAST(CAST($1 AS JSON) AS VARCHAR[]), regulation_id)
           ORDER BY store`,
          [JSON.stringify(regs.map((r) => String(r[0])))],
        )
      ).getRows();
      return regs.map(([id, createdAt, identities, resolved]) => {
        const own: RegulationStep[] = steps
          .filter((s) => s[0] === id)
          .map(([, store, status, reason, attempts, updatedAt]) => ({
            store: String(store),
            status: String(status) as StepStatus,
            reason: reason === null ? null : String(reason),
            attempts: Number(attempts),
            updatedAt: String(updatedAt),
          }));
        return {
          id: String(id),
          createdAt: String(createdAt),
          status: overallStatus(own),
          identities: JSON.parse(String(identities)) as Identity[],
          resolved: JSON.parse(String(resolved)) as Identity[],
          steps: own,
        };
      });
    });
  }

  async setStep(id: string, store: string, status: StepStatus, reason?: string): Promise<void> {
    await this.tx(async () => {
      await this.conn.run(
        `UPDATE _tributary.regulation_steps SET status = $3, reason = $4, attempts = attempts + 1, updated_at = now()
         WHERE regulation_id = $1 AND store = $2`,
        [id, store, status, reason ?? null],
      );
      // The last step done: the identities were kept only to retry the steps.
      await this.conn.run(
        `UPDATE _tributary.regulations SET identities = '[]', resolved = '[]' WHERE id = $1
         AND NOT EXISTS (SELECT 1 FROM _tributary.regulation_steps WHERE regulation_id = $1 AND status <> 'done')`,
        [id],
      );
    });
  }

  async addSteps(id: string, stores: readonly string[]): Promise<void> {
    await this.tx(async () => {
      for (const store of stores)
        await this.conn.run(
          "INSERT OR IGNORE INTO _tributary.regulation_steps VALUES ($1, $2, 'pending', NULL, 0, now())",
          [id, store],
        );
    });
  }

  async setResolved(id: string, resolved: readonly Identity[], suppress: readonly string[]): Promise<void> {
    await this.tx(async () => {
      await this.conn.run('UPDATE _tributary.regulations SET resolved = $2 WHERE id = $1', [
        id,
        JSON.stringify(resolved),
      ]);
      await this.suppress(id, suppress);
    });
  }

  /**
   * Also writes the table anew: an UPDATE leaves the old values in the file's blocks (the
   * caller then overwrites the free blocks, see `src/platform/duckdb/duckdb-erase.ts`).
   */
  async forgetIdentities(id: string): Promise<void> {
    await this.turns.run(async () => {
      await this.conn.run(
        "UPDATE _tributary.regulations SET identities = '[]', resolved = '[]' WHERE id = $1",
        [id],
      );
      const catalog = String((await this.conn.runAndReadAll('SELECT current_database()')).getRows()[0]![0]);
      await eraseRows(this.conn, { catalog, schema: '_tributary', name: 'regulations' }, 'false', [], {
        force: true,
      });
    });
  }

  suppressed(): Promise<string[]> {
    return this.turns.run(async () =>
      (await this.conn.runAndReadAll('SELECT hash FROM _tributary.suppressions'))
        .getRows()
        .map((r) => String(r[0])),
    );
  }

  async close(): Promise<void> {
    await this.turns.idle();
    this.conn.closeSync();
  }
}
