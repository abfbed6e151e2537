import type pg from 'pg';
import type { Identity } from '../../governance/privacy/erasure.js';
import {
  overallStatus,
  type Regulation,
  type RegulationStep,
  type RegulationStore,
  type StepStatus,
} from '../../governance/privacy/regulation.js';
import { advisoryXactLock } from '../../platform/postgres/advisory-locks.js';
import { pgIdent } from '../../platform/postgres/pg-sql.js';

/**
 * Regulations and the suppression list in the state database of the scale-out deployment
 * (schema `state.schema`), shared by every process: an ingest process refreshes its
 * suppression set from here.
 */
export class PostgresRegulationStore implements RegulationStore {
  private readonly s: string;

  private constructor(
    private readonly pool: pg.Pool,
    schema: string,
  ) {
    this.s = pgIdent(schema);
  }

  /** Creates the tables when missing; the pool is the caller's (the state store's). */
  static async open(pool: pg.Pool, schema = 'tributary'): Promise<PostgresRegulationStore> {
    const store = new PostgresRegulationStore(pool, schema);
    const s = store.s;
    await store.tx(async (c) => {
      await advisoryXactLock(c, `regulations-schema:${schema}`);
      await c.query(`CREATE SCHEMA IF NOT EXISTS ${s}`);
      await c.query(`CREATE TABLE IF NOT EXISTS ${s}.regulations (
        id text PRIMARY KEY, created_at timestamptz NOT NULL DEFAULT now(),
        identities jsonb NOT NULL, resolved jsonb NOT NULL DEFAULT '[]')`);
      await c.query(`CREATE TABLE IF NOT EXISTS ${s}.regulation_steps (
        regulation_id text NOT NULL REFERENCES ${s}.regulations (id), store text NOT NULL,
        status text NOT NULL, reason text, attempts integer NOT NULL DEFAULT 0,
        updated_at timestamptz NOT NULL DEFAULT now(), PRIMARY KEY (regulation_id, store))`);
      await c.query(`CREATE TABLE IF NOT EXISTS ${s}.suppressions (
        hash text PRIMARY KEY, regulation_id text NOT NULL, created_at timestamptz NOT NULL DEFAULT now())`);
    });
    return store;
  }

  private async tx<T>(work: (c: pg.PoolClient) => Promise<T>): Promise<T> {
    const c = await this.pool.connect();
    try {
      await c.query('BEGIN');
      const out = await work(c);
      await c.query('COMMIT');
      return out;
    } catch (err) {
      await c.query('ROLLBACK').catch(() => undefined);
      throw err;
    } finally {
      c.release();
    }
  }

  async create(r: {
    id: string;
    identities: Identity[];
    steps: string[];
    suppress: string[];
  }): Promise<Regulation> {
    await this.tx(async (c) => {
      await c.query(`INSERT INTO ${this.s}.regulations (id, identities) VALUES ($1, $2)`, [
        r.id,
        JSON.stringify(r.identities),
      ]);
      await c.query(
        `INSERT INTO ${this.s}.regulation_steps (regulation_id, store, status) SELECT $1, unnest($2::text[]), 'pending'`,
        [r.id, r.steps],
      );
      await this.suppressOn(c, r.id, r.suppress);
    });
    return (await this.get(r.id))!;
  }

  private async suppressOn(c: pg.PoolClient, id: string, hashes: readonly string[]): Promise<void> {
    if (hashes.length === 0) return;
    await c.query(
      `INSERT INTO ${this.s}.suppressions (hash, regulation_id) SELECT unnest($2::text[]), $1 ON CONFLICT DO NOTHING`,
      [id, hashes],
    );
  }

  async get(id: string): Promise<Regulation | undefined> {
    return (await this.read('WHERE id = $1', [id], 1))[0];
  }

  list(limit: number): Promise<Regulation[]> {
    return this.read('', [], limit);
  }

  unfinished(limit: number): Promise<Regulation[]> {
    return this.read(
      `WHERE id IN (SELECT regulation_id FROM ${this.s}.regulation_steps WHERE status <> 'done')`,
      [],
      limit,
      'ASC',
    );
  }

  private async read(where: string, params: string[], limit: number, order = 'DESC'): Promise<Regulation[]> {
    const regs = await this.pool.query<{
      id: string;
      created_at: Date;
      identities: Identity[];
      resolved: Identity[];
    }>(
      `SELECT id, created_at, identities, resolved FROM ${this.s}.regulations ${where}
       ORDER BY created_at ${order}, id LIMIT ${Math.trunc(limit)}`,
      params,
    );
    if (regs.rows.length === 0) return [];
    const steps = await this.pool.query<{
      regulation_id: string;
      store: string;
      status: StepStatus;
      reason: string | null;
      attempts: number;
      updated_at: Date;
    }>(`SELECT * FROM ${this.s}.regulation_steps WHERE regulation_id = ANY($1) ORDER BY store`, [
      regs.rows.map((r) => r.id),
    ]);
    return regs.rows.map((r) => {
      const own: RegulationStep[] = steps.rows
        .filter((s) => s.regulation_id === r.id)
        .map((s) => ({
          store: s.store,
          status: s.status,
          reason: s.reason,
          attempts: s.attempts,
          updatedAt: s.updated_at.toISOString(),
        }));
      return {
        id: r.id,
        createdAt: r.created_at.toISOString(),
        status: overallStatus(own),
        identities: r.identities,
        resolved: r.resolved,
        steps: own,
      };
    });
  }

  async setStep(id: string, store: string, status: StepStatus, reason?: string): Promise<void> {
    await this.tx(async (c) => {
      await c.query(
        `UPDATE ${this.s}.regulation_steps SET status = $3, reason = $4, attempts = attempts + 1, updated_at = now()
         WHERE regulation_id = $1 AND store = $2`,
        [id, store, status, reason ?? null],
      );
      // The last step done: the identities were kept only to retry the steps.
      await c.query(
        `UPDATE ${this.s}.regulations SET identities = '[]', resolved = '[]' WHERE id = $1
         AND NOT EXISTS (SELECT 1 FROM ${this.s}.regulation_steps WHERE regulation_id = $1 AND status <> 'done')`,
        [id],
      );
    });
  }

  async addSteps(id: string, stores: readonly string[]): Promise<void> {
    await this.pool.query(
      `INSERT INTO ${this.s}.regulation_steps (regulation_id, store, status)
       SELECT $1, unnest($2::text[]), 'pending' ON CONFLICT DO NOTHING`,
      [id, stores],
    );
  }

  async setResolved(id: string, resolved: readonly Identity[], suppress: readonly string[]): Promise<void> {
    await this.tx(async (c) => {
      await c.query(`UPDATE ${this.s}.regulations SET resolved = $2 WHERE id = $1`, [
        id,
        JSON.stringify(resolved),
      ]);
      await this.suppressOn(c, id, suppress);
    });
  }

  async forgetIdentities(id: string): Promise<void> {
    await this.pool.query(
      `UPDATE ${this.s}.regulations SET identities = '[]', resolved = '[]' WHERE id = $1`,
      [id],
    );
  }

  async suppressed(): Promise<string[]> {
    return (await this.pool.query<{ hash: string }>(`SELECT hash FROM ${this.s}.suppressions`)).rows.map(
      (r) => r.hash,
    );
  }

  async close(): Promise<void> {}
}
