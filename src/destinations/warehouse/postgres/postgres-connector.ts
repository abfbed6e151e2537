import pg from 'pg';
import { type ErrorCode, TributaryError } from '../../../errors.js';
import type { CheckResult, DestinationConnector } from '../../connector.js';
import { SegmentWarehouse } from '../segment-warehouse.js';
import type { PostgresDestinationConfig } from '../spec.js';
import { PostgresEngine } from './postgres-engine.js';

/** Segment tables in PostgreSQL, loaded with COPY; one instance per log partition in scale-out. */
export const postgresConnector: DestinationConnector<PostgresDestinationConfig> = {
  async check(config) {
    const client = new pg.Client({ ...pgConnection(config), connectionTimeoutMillis: config.connectTimeout });
    // An error event after connect (the server going away) must not become an uncaught one.
    client.on('error', () => undefined);
    try {
      await client.connect();
      await client.query('SELECT 1');
      return { ok: true };
    } catch (err) {
      return checkFailure(config, err);
    } finally {
      await client.end().catch(() => undefined);
    }
  },

  async create(config, ctx) {
    return new SegmentWarehouse({
      name: config.id,
      offsetKey: ctx.offsetKey,
      scope: ctx.scope,
      schema: config.schema,
      maxColumns: config.maxColumns,
      engine: new PostgresEngine({
        connection: pgConnection(config),
        maxColumns: config.maxColumns,
        timeouts: {
          statementMs: config.statementTimeout,
          connectMs: config.connectTimeout,
          socketMs: config.socketTimeout,
        },
      }),
    });
  },
};

/** Network errors of a connection that never reached a server. */
const UNREACHABLE = new Set([
  'ECONNREFUSED',
  'ENOTFOUND',
  'EAI_AGAIN',
  'ETIMEDOUT',
  'EHOSTUNREACH',
  'ENETUNREACH',
]);

/** The check's error, by SQLSTATE or network code; never a password in the message. */
function checkFailure(config: PostgresDestinationConfig, err: unknown): CheckResult {
  const e = err as { code?: string; message?: string };
  const text = String(e.message ?? err).slice(0, 300);
  const target = describeTarget(config);
  const result = (code: ErrorCode, args: string[]): CheckResult => {
    const t = new TributaryError(code, args);
    return { ok: false, code: t.code, message: t.message };
  };
  if ((e.code !== undefined && UNREACHABLE.has(e.code)) || /timeout/i.test(text))
    return result('TRIB_ERR_DEST_CHECK_UNREACHABLE', [config.id, target.address, text]);
  // 28P01 invalid_password, 28000 invalid_authorization_specification (no such role, pg_hba).
  if (e.code === '28P01' || e.code === '28000')
    return result('TRIB_ERR_DEST_CHECK_AUTH', [config.id, target.user, text]);
  if (e.code === '3D000') return result('TRIB_ERR_DEST_CHECK_DATABASE', [config.id, target.database, text]);
  return result('TRIB_ERR_DEST_CHECK_FAILED', [config.id, text]);
}

/** Host, user and database as the check names them (from the connection string when given). */
function describeTarget(c: PostgresDestinationConfig): { address: string; user: string; database: string } {
  if (c.connectionString !== undefined) {
    try {
      const u = new URL(c.connectionString);
      return {
        address: `${u.hostname || 'localhost'}:${u.port || '5432'}`,
        user: decodeURIComponent(u.username) || '(default)',
        database: decodeURIComponent(u.pathname.slice(1)) || '(default)',
      };
    } catch {
      return { address: '(connection string)', user: '(connection string)', database: '(connection string)' };
    }
  }
  return { address: `${c.host}:${c.port}`, user: c.user ?? '(default)', database: c.database ?? '(default)' };
}

/** The `pg` connection settings of a destination. */
export function pgConnection(c: PostgresDestinationConfig) {
  if (c.connectionString !== undefined)
    return { connectionString: c.connectionString, ssl: c.ssl || undefined };
  return {
    host: c.host,
    port: c.port,
    database: c.database,
    user: c.user,
    password: c.password,
    ssl: c.ssl || undefined,
  };
}
