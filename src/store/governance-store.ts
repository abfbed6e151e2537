import { storableText, toStorableTree } from '../spec/well-formed.js';
/**
 * The governance port: users, console sessions, API tokens and the append-only audit trail.
 * Adapters: DuckDB (`./duckdb/duckdb-governance-store.ts`, schema `_tributary_governance` of the
 * warehouse file, hidden from `/admin/v1/query`) and PostgreSQL
 * (`./postgres/postgres-governance-store.ts`, schema `<state schema>_governance`, which the
 * query role is never granted). Times are epoch milliseconds across the port.
 */

export interface UserRecord {
  id: string;
  /** Unique, the log-in name. */
  name: string;
  role: string;
  /** Source ids or labels the user is limited to; null: every source. */
  sources: string[] | null;
  /** argon2id PHC string. */
  passwordHash: string;
  createdAt: number;
  /** Who made the user (a user name, a token id, `admin-token`, `start`). */
  createdBy: string;
}

export interface SessionRecord {
  /** SHA-256 (hex) of the cookie's value: the value itself is never stored. */
  idHash: string;
  userId: string;
  /** Secret the session's CSRF tokens are made from (@fastify/csrf). */
  csrfSecret: string;
  createdAt: number;
  expiresAt: number;
}

export interface TokenRecord {
  id: string;
  name: string;
  /** SHA-256 (hex) of the token: the token itself is shown once and never stored. */
  tokenHash: string;
  /** The token's first characters, to tell tokens apart in lists. */
  prefix: string;
  /** The user the token acts for; null: a service token. */
  userId: string | null;
  role: string;
  sources: string[] | null;
  /** Permissions the token is limited to within its role; null: all of the role's. */
  scopes: string[] | null;
  createdAt: number;
  createdBy: string;
  expiresAt: number | null;
  revokedAt: number | null;
  lastUsedAt: number | null;
}

export type AuditOutcome = 'ok' | 'denied' | 'error';

/** One line of the audit trail: who, when, from where, what, and the outcome. */
export interface AuditEntry {
  at: number;
  /** `user`, `token`, `admin-token`, `read-token`, or `anonymous` (no valid credentials). */
  actorKind: string;
  /** User id, token id, or null. */
  actorId: string | null;
  /** User name, token name, or what was tried (the name of a failed log-in). */
  actorName: string | null;
  role: string | null;
  ip: string | null;
  /** What was done, from the route's rule (`users.add`, `query.run`, `profiles.read`, …). */
  action: string;
  method: string;
  /** The route's pattern, e.g. `/admin/v1/sources/:id/sync`. */
  route: string;
  /** What it was done to (a source, a user, a profile identifier, …). */
  target: string | null;
  /** More about it (the SQL text of a query, the filter of a retry, …). */
  details: Record<string, unknown> | null;
  outcome: AuditOutcome;
  status: number;
  /** The error code of a refusal or failure. */
  code: string | null;
}

export interface StoredAuditEntry extends AuditEntry {
  id: string;
}

export interface AuditFilter {
  /** Entries at or after this time. */
  since?: number;
  /** Actor's name or id. */
  actor?: string;
  /** Action, or an action prefix ending in `.` (`users.`). */
  action?: string;
  outcome?: AuditOutcome;
  /** Newest first, at most this many (default 100, at most 10,000). */
  limit?: number;
}

export interface GovernanceStore {
  /** Stores a new user; false when the name is taken. */
  insertUser(user: UserRecord): Promise<boolean>;
  userByName(name: string): Promise<UserRecord | undefined>;
  userById(id: string): Promise<UserRecord | undefined>;
  listUsers(): Promise<UserRecord[]>;
  countUsers(): Promise<number>;
  /** Users of this role (to keep the last owner). */
  countRole(role: string): Promise<number>;
  /** Removes the user, ends their sessions and revokes their tokens (at `at`). False when unknown. */
  deleteUser(id: string, at: number): Promise<boolean>;

  insertSession(session: SessionRecord): Promise<void>;
  /** The session of this hash if it has not expired at `now`. */
  sessionByHash(idHash: string, now: number): Promise<SessionRecord | undefined>;
  deleteSession(idHash: string): Promise<void>;
  /** Removes sessions expired before `now`; how many. */
  purgeSessions(now: number): Promise<number>;

  insertToken(token: TokenRecord): Promise<void>;
  tokenByHash(tokenHash: string): Promise<TokenRecord | undefined>;
  /** Tokens, newest first; of one user when `userId` is given (null: service tokens). */
  listTokens(filter?: { userId?: string | null }): Promise<TokenRecord[]>;
  tokenById(id: string): Promise<TokenRecord | undefined>;
  /** Marks the token revoked; false when unknown or revoked already. */
  revokeToken(id: string, at: number): Promise<boolean>;
  /** Records a use of the token. */
  touchToken(id: string, at: number): Promise<void>;

  /** Appends entries to the audit trail; entries are never changed afterwards. */
  appendAudit(entries: readonly AuditEntry[]): Promise<void>;
  listAudit(filter: AuditFilter): Promise<StoredAuditEntry[]>;
  /** Removes entries older than `before` (the retention): the only removal there is. How many. */
  purgeAudit(before: number): Promise<number>;

  close(): Promise<void>;
}

/** The limit `listAudit` applies: `filter.limit` within 1…10,000, default 100. */
export function auditLimit(filter: AuditFilter): number {
  const n = Math.trunc(Number(filter.limit ?? 100));
  return Number.isFinite(n) ? Math.min(Math.max(n, 1), 10_000) : 100;
}

/** A JSON array of strings (a stored `sources` / `scopes` column) as a list, or null. */
export function stringList(value: unknown): string[] | null {
  if (value === null || value === undefined) return null;
  const parsed = typeof value === 'string' ? (JSON.parse(value) as unknown) : value;
  return Array.isArray(parsed) ? parsed.map(String) : null;
}

/**
 * An audit entry every engine stores: its texts without U+0000 or lone surrogates (PostgreSQL
 * refuses them), so no request can keep itself out of the trail by the bytes it sends.
 */
export function storableAuditEntry(e: AuditEntry): AuditEntry {
  const text = (v: string | null) => (v === null ? null : storableText(v));
  return {
    ...e,
    actorKind: storableText(e.actorKind),
    actorId: text(e.actorId),
    actorName: text(e.actorName),
    role: text(e.role),
    ip: text(e.ip),
    action: storableText(e.action),
    method: storableText(e.method),
    route: storableText(e.route),
    target: text(e.target),
    details:
      e.details === null
        ? null
        : (toStorableTree(JSON.parse(JSON.stringify(e.details))) as Record<string, unknown>),
    code: text(e.code),
  };
}
