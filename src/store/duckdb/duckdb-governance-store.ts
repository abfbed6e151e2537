import { randomUUID } from 'node:crypto';
import type { DuckDBConnection, DuckDBInstance, DuckDBValue } from '@duckdb/node-api';
import { Turns } from '../../platform/async/turns.js';
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

/** The schema of the governance tables; `/admin/v1/query` does not see it (duckdb-user-query.ts). */
export const GOVERNANCE_SCHEMA = '_tributary_governance';

const S = GOVERNANCE_SCHEMA;
const SCHEMA = [
  `CREATE SCHEMA IF NOT EXISTS ${S}`,
  `CREATE TABLE IF NOT EXISTS ${S}.users (
    id VARCHAR PRIMARY KEY,
    name VARCHAR NOT NULL UNIQUE,
    role VARCHAR NOT NULL,
    sources JSON,
    password_hash VARCHAR NOT NULL,
    created_at TIMESTAMPTZ NOT NULL,
    created_by VARCHAR NOT NULL)`,
  `CREATE TABLE IF NOT EXISTS ${S}.sessions (
    id_hash VARCHAR PRIMARY KEY,
    user_id VARCHAR NOT NULL,
    csrf_secret VARCHAR NOT NULL,
    created_at TIMESTAMPTZ NOT NULL,
    expires_at TIMESTAMPTZ NOT NULL)`,
  `CREATE TABLE IF NOT EXISTS ${S}.api_tokens (
    id VARCHAR PRIMARY KEY,
    name VARCHAR NOT NULL,
    token_hash VARCHAR NOT NULL UNIQUE,
    prefix VARCHAR NOT NULL,
    user_id VARCHAR,
    role VARCHAR NOT NULL,
    sources JSON,
    scopes JSON,
    created_at TIMESTAMPTZ NOT NULL,
    created_by VARCHAR NOT NULL,
    expires_at TIMESTAMPTZ,
    revoked_at TIMESTAMPTZ,
    last_used_at TIMESTAMPTZ)`,
  `CREATE TABLE IF NOT EXISTS ${S}.audit_log (
    id VARCHAR NOT NULL,
    "at" TIMESTAMPTZ NOT NULL,
    actor_kind VARCHAR NOT NULL,
    actor_id VARCHAR,
    actor_name VARCHAR,
    role VARCHAR,
    ip VARCHAR,
    action VARCHAR NOT NULL,
    method VARCHAR NOT NULL,
    route VARCHAR NOT NULL,
    target VARCHAR,
    details JSON,
    outcome VARCHAR NOT NULL,
    status INTEGER NOT NULL,
    code VARCHAR)`,
];

/** A timestamp from epoch milliseconds (a parameter or a number). */
const stamp = (ms: string | number) =>
  `make_timestamptz(CAST(${typeof ms === 'number' ? Math.trunc(ms) : ms} AS BIGINT) * CAST(1000 AS BIGINT))`;
const ts = (n: number) => stamp(n);
const ms = (col: string) => `epoch_ms(${col}) AS ${col.replaceAll('"', '')}`;

const USER_COLUMNS = `id, name, role, CAST(sources AS VARCHAR) AS sources, password_hash, ${ms('created_at')}, created_by`;
const SESSION_COLUMNS = `id_hash, user_id, csrf_secret, ${ms('created_at')}, ${ms('expires_at')}`;
const TOKEN_COLUMNS = `id, name, token_hash, prefix, user_id, role, CAST(sources AS VARCHAR) AS sources,
  CAST(scopes AS VARCHAR) AS scopes, ${ms('created_at')}, created_by, ${ms('expires_at')}, ${ms('revoked_at')},
  ${ms('last_used_at')}`;
const AUDIT_COLUMNS = `id, ${ms('"at"')}, actor_kind, actor_id, actor_name, role, ip, action, method, route, target,
  CAST(details AS VARCHAR) AS details, outcome, status, code`;

type Row = Record<string, unknown>;
const num = (v: unknown) => Number(v);
const json = (v: readonly string[] | null) => (v === null ? null : JSON.stringify(v));
const epoch = (n: number) => BigInt(Math.trunc(n));

/**
 * The governance tables in the embedded DuckDB (the warehouse file), on a connection of
 * their own whose statements take turns (one may hold a transaction).
 */
export class DuckDBGovernanceStore implements GovernanceStore {
  private readonly turns = new Turns();
  private closed = false;

  /** Runs `job` on the connection in its turn; after close, rejects instead of touching a closed connection. */
  private turn<T>(job: () => Promise<T>): Promise<T> {
    return this.turns.run(() =>
      this.closed ? Promise.reject(new Error('the governance store is closed')) : job(),
    );
  }

  private constructor(private readonly conn: DuckDBConnection) {}

  static async open(instance: DuckDBInstance): Promise<DuckDBGovernanceStore> {
    const conn = await instance.connect();
    for (const sql of SCHEMA) await conn.run(sql);
    return new DuckDBGovernanceStore(conn);
  }

  private rows(sql: string, params: DuckDBValue[] = []): Promise<Row[]> {
    return this.turn(async () => {
      const r = await this.conn.runAndReadAll(sql, params);
      return r.getRowObjectsJson() as Row[];
    });
  }

  private run(sql: string, params: DuckDBValue[] = []): Promise<number> {
    return this.turn(async () => Number((await this.conn.run(sql, params)).rowsChanged));
  }

  async insertUser(u: UserRecord): Promise<boolean> {
    const n = await this.run(
      `INSERT INTO ${S}.users VALUES ($1, $2, $3, $4, $5, ${stamp('$6')}, $7) ON CONFLICT DO NOTHING`,
      [u.id, u.name, u.role, json(u.sources), u.passwordHash, epoch(u.createdAt), u.createdBy],
    );
    return n > 0;
  }

  async userByName(name: string): Promise<UserRecord | undefined> {
    const [r] = await this.rows(`SELECT ${USER_COLUMNS} FROM ${S}.users WHERE name = $1`, [name]);
    return r && user(r);
  }

  async userById(id: string): Promise<UserRecord | undefined> {
    const [r] = await this.rows(`SELECT ${USER_COLUMNS} FROM ${S}.users WHERE id = $1`, [id]);
    return r && user(r);
  }

  async listUsers(): Promise<UserRecord[]> {
    return (await this.rows(`SELECT ${USER_COLUMNS} FROM ${S}.users ORDER BY name`)).map(user);
  }

  async countUsers(): Promise<number> {
    const [r] = await this.rows(`SELECT count(*) AS n FROM ${S}.users`);
    return num(r?.n ?? 0);
  }

  async countRole(role: string): Promise<number> {
    const [r] = await this.rows(`SELECT count(*) AS n FROM ${S}.users WHERE role = $1`, [role]);
    return num(r?.n ?? 0);
  }

  deleteUser(id: string, at: number): Promise<boolean> {
    return this.turn(async () => {
      const c = this.conn;
      await c.run('BEGIN TRANSACTION');
      try {
        const n = Number((await c.run(`DELETE FROM ${S}.users WHERE id = $1`, [id])).rowsChanged);
        await c.run(`DELETE FROM ${S}.sessions WHERE user_id = $1`, [id]);
        await c.run(
          `UPDATE ${S}.api_tokens SET revoked_at = ${stamp('$2')} WHERE user_id = $1 AND revoked_at IS NULL`,
          [id, epoch(at)],
        );
        await c.run('COMMIT');
        return n > 0;
      } catch (err) {
        await c.run('ROLLBACK').catch(() => undefined);
        throw err;
      }
    });
  }

  async insertSession(s: SessionRecord): Promise<void> {
    await this.run(`INSERT INTO ${S}.sessions VALUES ($1, $2, $3, ${stamp('$4')}, ${stamp('$5')})`, [
      s.idHash,
      s.userId,
      s.csrfSecret,
      epoch(s.createdAt),
      epoch(s.expiresAt),
    ]);
  }

  async sessionByHash(idHash: string, now: number): Promise<SessionRecord | undefined> {
    const [r] = await this.rows(
      `SELECT ${SESSION_COLUMNS} FROM ${S}.sessions WHERE id_hash = $1 AND expires_at > ${ts(now)}`,
      [idHash],
    );
    return r && session(r);
  }

  async deleteSession(idHash: string): Promise<void> {
    await this.run(`DELETE FROM ${S}.sessions WHERE id_hash = $1`, [idHash]);
  }

  purgeSessions(now: number): Promise<number> {
    return this.run(`DELETE FROM ${S}.sessions WHERE expires_at <= ${ts(now)}`);
  }

  async insertToken(t: TokenRecord): Promise<void> {
    await this.run(
      `INSERT INTO ${S}.api_tokens VALUES ($1, $2, $3, $4, $5, $6, $7, $8, ${stamp('$9')}, $10,
         ${stamp('$11')}, NULL, NULL)`,
      [
        t.id,
        t.name,
        t.tokenHash,
        t.prefix,
        t.userId,
        t.role,
        json(t.sources),
        json(t.scopes),
        epoch(t.createdAt),
        t.createdBy,
        t.expiresAt === null ? null : epoch(t.expiresAt),
      ],
    );
  }

  async tokenByHash(tokenHash: string): Promise<TokenRecord | undefined> {
    const [r] = await this.rows(`SELECT ${TOKEN_COLUMNS} FROM ${S}.api_tokens WHERE token_hash = $1`, [
      tokenHash,
    ]);
    return r && token(r);
  }

  async tokenById(id: string): Promise<TokenRecord | undefined> {
    const [r] = await this.rows(`SELECT ${TOKEN_COLUMNS} FROM ${S}.api_tokens WHERE id = $1`, [id]);
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
        `SELECT ${TOKEN_COLUMNS} FROM ${S}.api_tokens ${where} ORDER BY created_at DESC`,
        params,
      )
    ).map(token);
  }

  async revokeToken(id: string, at: number): Promise<boolean> {
    const n = await this.run(
      `UPDATE ${S}.api_tokens SET revoked_at = ${stamp('$2')} WHERE id = $1 AND revoked_at IS NULL`,
      [id, epoch(at)],
    );
    return n > 0;
  }

  async touchToken(id: string, at: number): Promise<void> {
    await this.run(`UPDATE ${S}.api_tokens SET last_used_at = ${stamp('$2')} WHERE id = $1`, [id, epoch(at)]);
  }

  appendAudit(given: readonly AuditEntry[]): Promise<void> {
    const entries = given.map(storableAuditEntry);
    if (entries.length === 0) return Promise.resolve();
    return this.turn(async () => {
      // One statement of N rows: its values bound, never spliced.
      const params: DuckDBValue[] = [];
      const rows = entries.map((e) => {
        const at = params.length;
        params.push(
          randomUUID(),
          epoch(e.at),
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
        const p = (i: number) => `$${at + i}`;
        return `(${p(1)}, ${stamp(p(2))}, ${Array.from({ length: 13 }, (_, i) => p(i + 3)).join(', ')})`;
      });
      await this.conn.run(`INSERT INTO ${S}.audit_log VALUES ${rows.join(', ')}`, params);
    });
  }

  async listAudit(filter: AuditFilter): Promise<StoredAuditEntry[]> {
    const { where, params } = auditWhere(filter, stamp, (v) => BigInt(v));
    return (
      await this.rows(
        `SELECT ${AUDIT_COLUMNS} FROM ${S}.audit_log ${where} ORDER BY "at" DESC, id LIMIT ${auditLimit(filter)}`,
        params,
      )
    ).map(auditEntry);
  }

  purgeAudit(before: number): Promise<number> {
    return this.run(`DELETE FROM ${S}.audit_log WHERE "at" < ${ts(before)}`);
  }

  async close(): Promise<void> {
    await this.turns.run(async () => {
      if (this.closed) return;
      this.closed = true;
      this.conn.closeSync();
    });
  }
}
