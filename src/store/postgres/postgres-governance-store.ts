import { randomUUID } from 'node:crypto';
import type pg from 'pg';
import { advisoryXactLock } from '../../platform/postgres/advisory-locks.js';
import { pgIdent } from '../../platform/postgres/pg-sql.js';
import { auditEntry, auditWhere, session, token, user } from '../governance-rows.js';
import {
  type AuditEntry,
  type AuditFilter,
  auditLimit,
  type GovernanceStore,
  type SessionRecord,
  type StoredAuditEntry,
  storableAuditEntry,
  type TokenRecord,
  type UserRecord,
} from '../governance-store.js';

/** The governance schema beside the state schema `schema`: the query role is never granted it. */
export function governanceSchema(schema: string): string {
  return `${schema}_governance`;
}

/** Name of the setting the purge sets (transaction-local) so the audit trigger lets its DELETE through. */
const PURGE_SETTING = 'tributary.audit_purge';

function schemaSql(s: string): string[] {
  return [
    `CREATE SCHEMA IF NOT EXISTS ${s}`,
    `CREATE TABLE IF NOT EXISTS ${s}.users (
      id text PRIMARY KEY,
      name text NOT NULL UNIQUE,
      role text NOT NULL,
      sources jsonb,
      password_hash text NOT NULL,
      created_at timestamptz NOT NULL,
      created_by text NOT NULL)`,
    `CREATE TABLE IF NOT EXISTS ${s}.sessions (
      id_hash text PRIMARY KEY,
      user_id text NOT NULL,
      csrf_secret text NOT NULL,
      created_at timestamptz NOT NULL,
      expires_at timestamptz NOT NULL)`,
    `CREATE INDEX IF NOT EXISTS sessions_user ON ${s}.sessions (user_id)`,
    `CREATE TABLE IF NOT EXISTS ${s}.api_tokens (
      id text PRIMARY KEY,
      name text NOT NULL,
      token_hash text NOT NULL UNIQUE,
      prefix text NOT NULL,
      user_id text,
      role text NOT NULL,
      sources jsonb,
      scopes jsonb,
      created_at timestamptz NOT NULL,
      created_by text NOT NULL,
      expires_at timestamptz,
      revoked_at timestamptz,
      last_used_at timestamptz)`,
    `CREATE TABLE IF NOT EXISTS ${s}.audit_log (
      id text PRIMARY KEY,
      "at" timestamptz NOT NULL,
      actor_kind text NOT NULL,
      actor_id text,
      actor_name text,
      role text,
      ip text,
      action text NOT NULL,
      method text NOT NULL,
      route text NOT NULL,
      target text,
      details jsonb,
      outcome text NOT NULL,
      status integer NOT NULL,
      code text)`,
    `CREATE INDEX IF NOT EXISTS audit_log_at ON ${s}.audit_log ("at")`,
    // Append-only: UPDATE, TRUNCATE and DELETE are refused, except the retention purge's DELETE
    // (its transaction sets the setting). A guard against mistakes and the application's own
    // bugs; the owner of the table can still drop the trigger.
    `CREATE OR REPLACE FUNCTION ${s}.audit_log_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
      BEGIN
        IF TG_OP = 'DELETE' AND current_setting('${PURGE_SETTING}', true) = 'on' THEN RETURN OLD; END IF;
        RAISE EXCEPTION 'audit_log is append-only: % refused', TG_OP USING ERRCODE = 'insufficient_privilege';
      END $$`,
    `DROP TRIGGER IF EXISTS audit_log_append_only ON ${s}.audit_log`,
    `CREATE TRIGGER audit_log_append_only BEFORE UPDATE OR DELETE ON ${s}.audit_log
      FOR EACH ROW EXECUTE FUNCTION ${s}.audit_log_append_only()`,
    `DROP TRIGGER IF EXISTS audit_log_no_truncate ON ${s}.audit_log`,
    `CREATE TRIGGER audit_log_no_truncate BEFORE TRUNCATE ON ${s}.audit_log
      FOR EACH STATEMENT EXECUTE FUNCTION ${s}.audit_log_append_only()`,
  ];
}

const ms = (col: string) => `(extract(epoch FROM ${col}) * 1000)::bigint AS ${col.replaceAll('"', '')}`;
const USER_COLUMNS = `id, name, role, sources, password_hash, ${ms('created_at')}, created_by`;
const SESSION_COLUMNS = `id_hash, user_id, csrf_secret, ${ms('created_at')}, ${ms('expires_at')}`;
const TOKEN_COLUMNS = `id, name, token_hash, prefix, user_id, role, sources, scopes, ${ms('created_at')}, created_by,
  ${ms('expires_at')}, ${ms('revoked_at')}, ${ms('last_used_at')}`;
const AUDIT_COLUMNS = `id, ${ms('"at"')}, actor_kind, actor_id, actor_name, role, ip, action, method, route, target,
  details, outcome, status, code`;
const at = (p: string) => `to_timestamp(${p}::bigint / 1000.0)`;
const json = (v: readonly string[] | null) => (v === null ? null : JSON.stringify(v));

/**
 * The governance tables of the scale-out deployment, in their own schema of the state
 * database, on the state store's pool.
 */
export class PostgresGovernanceStore implements GovernanceStore {
  private constructor(
    private readonly pool: pg.Pool,
    private readonly s: string,
  ) {}

  /** Creates the tables when missing (safe when several processes start at once). */
  static async open(pool: pg.Pool, stateSchema: string): Promise<PostgresGovernanceStore> {
    const s = pgIdent(governanceSchema(stateSchema));
    const c = await pool.connect();
    try {
      await c.query('BEGIN');
      await advisoryXactLock(c, `governance-schema:${stateSchema}`);
      for (const sql of schemaSql(s)) await c.query(sql);
      await c.query('COMMIT');
    } catch (err) {
      await c.query('ROLLBACK').catch(() => undefined);
      throw err;
    } finally {
      c.release();
    }
    return new PostgresGovernanceStore(pool, s);
  }

  private async rows(sql: string, params: unknown[] = []): Promise<Record<string, unknown>[]> {
    return (await this.pool.query(sql, params)).rows as Record<string, unknown>[];
  }

  private async run(sql: string, params: unknown[] = []): Promise<number> {
    return (await this.pool.query(sql, params)).rowCount ?? 0;
  }

  async insertUser(u: UserRecord): Promise<boolean> {
    const n = await this.run(
      `INSERT INTO ${this.s}.users VALUES ($1, $2, $3, $4, $5, ${at('$6')}, $7) ON CONFLICT DO NOTHING`,
      [u.id, u.name, u.role, json(u.sources), u.passwordHash, u.createdAt, u.createdBy],
    );
    return n > 0;
  }

  async userByName(name: string): Promise<UserRecord | undefined> {
    const [r] = await this.rows(`SELECT ${USER_COLUMNS} FROM ${this.s}.users WHERE name = $1`, [name]);
    return r && user(r);
  }

  async userById(id: string): Promise<UserRecord | undefined> {
    const [r] = await this.rows(`SELECT ${USER_COLUMNS} FROM ${this.s}.users WHERE id = $1`, [id]);
    return r && user(r);
  }

  async listUsers(): Promise<UserRecord[]> {
    return (await this.rows(`SELECT ${USER_COLUMNS} FROM ${this.s}.users ORDER BY name`)).map(user);
  }

  async countUsers(): Promise<number> {
    const [r] = await this.rows(`SELECT count(*) AS n FROM ${this.s}.users`);
    return Number(r?.n ?? 0);
  }

  async countRole(role: string): Promise<number> {
    const [r] = await this.rows(`SELECT count(*) AS n FROM ${this.s}.users WHERE role = $1`, [role]);
    return Number(r?.n ?? 0);
  }

  async deleteUser(id: string, when: number): Promise<boolean> {
    const c = await this.pool.connect();
    try {
      await c.query('BEGIN');
      const n = (await c.query(`DELETE FROM ${this.s}.users WHERE id = $1`, [id])).rowCount ?? 0;
      await c.query(`DELETE FROM ${this.s}.sessions WHERE user_id = $1`, [id]);
      await c.query(
        `UPDATE ${this.s}.api_tokens SET revoked_at = ${at('$2')} WHERE user_id = $1 AND revoked_at IS NULL`,
        [id, when],
      );
      await c.query('COMMIT');
      return n > 0;
    } catch (err) {
      await c.query('ROLLBACK').catch(() => undefined);
      throw err;
    } finally {
      c.release();
    }
  }

  async insertSession(x: SessionRecord): Promise<void> {
    await this.run(`INSERT INTO ${this.s}.sessions VALUES ($1, $2, $3, ${at('$4')}, ${at('$5')})`, [
      x.idHash,
      x.userId,
      x.csrfSecret,
      x.createdAt,
      x.expiresAt,
    ]);
  }

  async sessionByHash(idHash: string, now: number): Promise<SessionRecord | undefined> {
    const [r] = await this.rows(
      `SELECT ${SESSION_COLUMNS} FROM ${this.s}.sessions WHERE id_hash = $1 AND expires_at > ${at('$2')}`,
      [idHash, now],
    );
    return r && session(r);
  }

  async deleteSession(idHash: string): Promise<void> {
    await this.run(`DELETE FROM ${this.s}.sessions WHERE id_hash = $1`, [idHash]);
  }

  purgeSessions(now: number): Promise<number> {
    return this.run(`DELETE FROM ${this.s}.sessions WHERE expires_at <= ${at('$1')}`, [now]);
  }

  async insertToken(t: TokenRecord): Promise<void> {
    await this.run(
      `INSERT INTO ${this.s}.api_tokens VALUES ($1, $2, $3, $4, $5, $6, $7, $8, ${at('$9')}, $10, ${at('$11')}, NULL, NULL)`,
      [
        t.id,
        t.name,
        t.tokenHash,
        t.prefix,
        t.userId,
        t.role,
        json(t.sources),
        json(t.scopes),
        t.createdAt,
        t.createdBy,
        t.expiresAt,
      ],
    );
  }

  async tokenByHash(tokenHash: string): Promise<TokenRecord | undefined> {
    const [r] = await this.rows(`SELECT ${TOKEN_COLUMNS} FROM ${this.s}.api_tokens WHERE token_hash = $1`, [
      tokenHash,
    ]);
    return r && token(r);
  }

  async tokenById(id: string): Promise<TokenRecord | undefined> {
    const [r] = await this.rows(`SELECT ${TOKEN_COLUMNS} FROM ${this.s}.api_tokens WHERE id = $1`, [id]);
    return r && token(r);
  }

  async listTokens(filter: { userId?: string | null } = {}): Promise<TokenRecord[]> {
    const where =
      filter.userId === undefined
        ? ''
        : filter.userId === null
          ? 'WHERE user_id IS NULL'
          : 'WHERE user_id = $1';
    const params = filter.userId ? [filter.userId] : [];
    return (
      await this.rows(
        `SELECT ${TOKEN_COLUMNS} FROM ${this.s}.api_tokens ${where} ORDER BY created_at DESC`,
        params,
      )
    ).map(token);
  }

  async revokeToken(id: string, when: number): Promise<boolean> {
    const n = await this.run(
      `UPDATE ${this.s}.api_tokens SET revoked_at = ${at('$2')} WHERE id = $1 AND revoked_at IS NULL`,
      [id, when],
    );
    return n > 0;
  }

  async touchToken(id: string, when: number): Promise<void> {
    await this.run(`UPDATE ${this.s}.api_tokens SET last_used_at = ${at('$2')} WHERE id = $1`, [id, when]);
  }

  async appendAudit(given: readonly AuditEntry[]): Promise<void> {
    const entries = given.map(storableAuditEntry);
    if (entries.length === 0) return;
    const params: unknown[] = [];
    const rows = entries.map((e) => {
      const first = params.length;
      params.push(
        randomUUID(),
        e.at,
        e.actorKind,
        e.actorId,
        e.actorName,
        e.role,
        e.ip,
        e.action,
        e.method,
        e.route,
        e.target,
        e.details === null ? null : JSON.stringify(e.details),
        e.outcome,
        e.status,
        e.code,
      );
      const p = (i: number) => `$${first + i}`;
      return `(${p(1)}, ${at(p(2))}, ${Array.from({ length: 13 }, (_, i) => p(i + 3)).join(', ')})`;
    });
    await this.run(`INSERT INTO ${this.s}.audit_log VALUES ${rows.join(', ')}`, params);
  }

  async listAudit(filter: AuditFilter): Promise<StoredAuditEntry[]> {
    const { where, params } = auditWhere(filter, at, (v) => v);
    return (
      await this.rows(
        `SELECT ${AUDIT_COLUMNS} FROM ${this.s}.audit_log ${where} ORDER BY "at" DESC, id LIMIT ${auditLimit(filter)}`,
        params,
      )
    ).map(auditEntry);
  }

  async purgeAudit(before: number): Promise<number> {
    const c = await this.pool.connect();
    try {
      await c.query('BEGIN');
      await c.query(`SELECT set_config('${PURGE_SETTING}', 'on', true)`);
      const n = (await c.query(`DELETE FROM ${this.s}.audit_log WHERE "at" < ${at('$1')}`, [before]))
        .rowCount;
      await c.query('COMMIT');
      return n ?? 0;
    } catch (err) {
      await c.query('ROLLBACK').catch(() => undefined);
      throw err;
    } finally {
      c.release();
    }
  }

  /** The pool is the state store's: closing does nothing. */
  async close(): Promise<void> {}
}
