/** Rows of the governance tables as the adapters read them (times as epoch milliseconds). */
import {
  type AuditFilter,
  type SessionRecord,
  type StoredAuditEntry,
  stringList,
  type TokenRecord,
  type UserRecord,
} from './governance-store.js';

type Row = Record<string, unknown>;
const num = (v: unknown) => Number(v);
const numOrNull = (v: unknown) => (v === null || v === undefined ? null : Number(v));
const strOrNull = (v: unknown) => (v === null || v === undefined ? null : String(v));

/** The WHERE clause of an audit filter with its parameters ($1…), shared with PostgreSQL's adapter. */
export function auditWhere<V>(
  filter: AuditFilter,
  at: (param: string) => string,
  epoch: (ms: number) => V,
): { where: string; params: (V | string)[] } {
  const parts: string[] = [];
  const params: (V | string)[] = [];
  const param = (v: V | string) => {
    params.push(v);
    return `$${params.length}`;
  };
  if (filter.since !== undefined) parts.push(`"at" >= ${at(param(epoch(Math.trunc(filter.since))))}`);
  if (filter.actor !== undefined) {
    const p = param(filter.actor);
    parts.push(`(actor_name = ${p} OR actor_id = ${p})`);
  }
  if (filter.action !== undefined) {
    if (filter.action.endsWith('.')) {
      const p = param(filter.action);
      parts.push(`left(action, length(CAST(${p} AS VARCHAR))) = CAST(${p} AS VARCHAR)`);
    } else parts.push(`action = ${param(filter.action)}`);
  }
  if (filter.outcome !== undefined) parts.push(`outcome = ${param(filter.outcome)}`);
  return { where: parts.length > 0 ? `WHERE ${parts.join(' AND ')}` : '', params };
}

export function user(r: Row): UserRecord {
  return {
    id: String(r.id),
    name: String(r.name),
    role: String(r.role),
    sources: stringList(r.sources),
    passwordHash: String(r.password_hash),
    createdAt: num(r.created_at),
    createdBy: String(r.created_by),
  };
}

export function session(r: Row): SessionRecord {
  return {
    idHash: String(r.id_hash),
    userId: String(r.user_id),
    csrfSecret: String(r.csrf_secret),
    createdAt: num(r.created_at),
    expiresAt: num(r.expires_at),
  };
}

export function token(r: Row): TokenRecord {
  return {
    id: String(r.id),
    name: String(r.name),
    tokenHash: String(r.token_hash),
    prefix: String(r.prefix),
    userId: strOrNull(r.user_id),
    role: String(r.role),
    sources: stringList(r.sources),
    scopes: stringList(r.scopes),
    createdAt: num(r.created_at),
    createdBy: String(r.created_by),
    expiresAt: numOrNull(r.expires_at),
    revokedAt: numOrNull(r.revoked_at),
    lastUsedAt: numOrNull(r.last_used_at),
  };
}

export function auditEntry(r: Row): StoredAuditEntry {
  return {
    id: String(r.id),
    at: num(r.at),
    actorKind: String(r.actor_kind),
    actorId: strOrNull(r.actor_id),
    actorName: strOrNull(r.actor_name),
    role: strOrNull(r.role),
    ip: strOrNull(r.ip),
    action: String(r.action),
    method: String(r.method),
    route: String(r.route),
    target: strOrNull(r.target),
    details:
      r.details === null || r.details === undefined
        ? null
        : typeof r.details === 'string'
          ? (JSON.parse(r.details) as Record<string, unknown>)
          : (r.details as Record<string, unknown>),
    outcome: String(r.outcome) as StoredAuditEntry['outcome'],
    status: num(r.status),
    code: strOrNull(r.code),
  };
}
