import { createHash, randomBytes, randomUUID } from 'node:crypto';
import CsrfTokens from '@fastify/csrf';
import { hash as argon2Hash, verify as argon2Verify } from '@node-rs/argon2';
import { TributaryError } from '../errors.js';
import type {
  AuditEntry,
  AuditFilter,
  GovernanceStore,
  StoredAuditEntry,
  TokenRecord,
  UserRecord,
} from '../store/governance-store.js';
import { LoginThrottle } from './login-throttle.js';
import type { Principal } from './principal.js';
import { isPermission, isRole, type Permission, type Role, roleCovers, roleHas } from './roles.js';

export interface GovernanceOptions {
  /** How long audit entries are kept. Default 90 days. */
  auditRetentionMs?: number;
  /** How long a console session lasts. Default 12 hours. */
  sessionTtlMs?: number;
  /** The session cookie's Secure flag: by the request's protocol (`auto`), or fixed. Default `auto`. */
  secureCookie?: 'auto' | 'always' | 'never';
  /** Failed log-ins of a name before it is locked (default 5), and for how long (default 15 min). */
  maxFailures?: number;
  lockoutMs?: number;
  /** Labels of each source, for roles limited to labels. */
  sourceLabels?: (sourceId: string) => readonly string[];
  /** The clock (tests). */
  now?: () => number;
}

/** What a user looks like through the API: never the password hash. */
export interface UserView {
  id: string;
  name: string;
  role: Role;
  sources: string[] | null;
  createdAt: string;
  createdBy: string;
}

/** What a token looks like through the API: never its hash. */
export interface TokenView {
  id: string;
  name: string;
  prefix: string;
  user: string | null;
  role: string;
  sources: string[] | null;
  scopes: string[] | null;
  createdAt: string;
  createdBy: string;
  expiresAt: string | null;
  revokedAt: string | null;
  lastUsedAt: string | null;
}

/** Prefix of API tokens, so a leaked one is recognisable (secret scanners) and told apart from the admin token. */
export const TOKEN_PREFIX = 'trb_';
/** Name of the console's session cookie. */
export const SESSION_COOKIE = 'tributary_session';

/** Token uses closer together than this update `last_used_at` once. */
const TOUCH_EVERY_MS = 60_000;
const NAME = /^[A-Za-z0-9][A-Za-z0-9._@-]{0,127}$/;

const sha256 = (text: string) => createHash('sha256').update(text).digest('hex');
const iso = (ms: number | null) => (ms === null ? null : new Date(ms).toISOString());

/**
 * Users, console sessions, API tokens and the audit trail over a `GovernanceStore`. Passwords
 * are argon2id hashes (@node-rs/argon2); sessions and tokens are 256-bit random values of
 * which only the SHA-256 is stored; CSRF tokens come from a per-session secret (@fastify/csrf).
 */
export class Governance {
  readonly sessionTtlMs: number;
  readonly auditRetentionMs: number;
  readonly secureCookie: 'auto' | 'always' | 'never';
  private readonly now: () => number;
  private readonly throttle: LoginThrottle;
  private readonly csrf = CsrfTokens();
  private readonly touched = new Map<string, number>();
  /** A hash verified when the user is unknown, so both answers take as long. */
  private dummyHash: Promise<string> | undefined;

  constructor(
    readonly store: GovernanceStore,
    private readonly options: GovernanceOptions = {},
  ) {
    this.sessionTtlMs = options.sessionTtlMs ?? 12 * 3_600_000;
    this.auditRetentionMs = options.auditRetentionMs ?? 90 * 86_400_000;
    this.secureCookie = options.secureCookie ?? 'auto';
    this.now = options.now ?? Date.now;
    const lockoutMs = options.lockoutMs ?? 15 * 60_000;
    this.throttle = new LoginThrottle({
      maxFailures: options.maxFailures ?? 5,
      windowMs: lockoutMs,
      lockoutMs,
    });
  }

  // ---- users ----

  /**
   * Makes the first owner when there is no user at all: its name is `owner` and its password
   * random, returned once (the caller prints it). Undefined when users exist, or another
   * process made the first one at the same moment.
   */
  async bootstrapOwner(): Promise<{ name: string; password: string } | undefined> {
    if ((await this.store.countUsers()) > 0) return undefined;
    const password = randomBytes(18).toString('base64url');
    const made = await this.store.insertUser({
      id: randomUUID(),
      name: 'owner',
      role: 'owner',
      sources: null,
      passwordHash: await argon2Hash(password),
      createdAt: this.now(),
      createdBy: 'start',
    });
    return made ? { name: 'owner', password } : undefined;
  }

  /**
   * Adds a user. Only an owner gives the owner role. Without `password` one is generated and
   * returned (shown once).
   */
  async addUser(
    input: { name: unknown; role: unknown; sources?: unknown; password?: unknown },
    by: Principal,
  ): Promise<{ user: UserView; password?: string }> {
    const name = checkName(input.name, 'name');
    const role = checkRole(input.role);
    if (!roleCovers(by.role, role))
      throw new TributaryError('TRIB_ERR_AUTH_FORBIDDEN', [by.role, `giving the role ${role}`, role]);
    const sources = checkSources(input.sources);
    let password: string | undefined;
    if (input.password !== undefined) {
      if (typeof input.password !== 'string' || input.password.length < 12 || input.password.length > 1024)
        throw new TributaryError('TRIB_ERR_GOVERNANCE_BAD_REQUEST', ['password: 12 to 1024 characters']);
      password = input.password;
    }
    const generated = password === undefined ? randomBytes(18).toString('base64url') : undefined;
    const record: UserRecord = {
      id: randomUUID(),
      name,
      role,
      sources,
      passwordHash: await argon2Hash(password ?? generated!),
      createdAt: this.now(),
      createdBy: by.name,
    };
    if (!(await this.store.insertUser(record)))
      throw new TributaryError('TRIB_ERR_GOVERNANCE_USER_EXISTS', [name]);
    return { user: userView(record), ...(generated ? { password: generated } : {}) };
  }

  async listUsers(): Promise<UserView[]> {
    return (await this.store.listUsers()).map(userView);
  }

  /** Removes a user, their sessions and tokens; the last owner stays. */
  async removeUser(name: string): Promise<UserView> {
    const user = await this.store.userByName(name);
    if (!user) throw new TributaryError('TRIB_ERR_GOVERNANCE_USER_NOT_FOUND', [name]);
    if (user.role === 'owner' && (await this.store.countRole('owner')) <= 1)
      throw new TributaryError('TRIB_ERR_GOVERNANCE_LAST_OWNER', [name]);
    await this.store.deleteUser(user.id, this.now());
    return userView(user);
  }

  // ---- sessions ----

  /**
   * Checks a user's password and opens a session: the cookie's value (to set once) and a CSRF
   * token. Wrong name or password: `TRIB_ERR_AUTH_BAD_CREDENTIALS`, the same answer for both,
   * after an argon2 verification either way. After `maxFailures` failures the name is locked:
   * `TRIB_ERR_AUTH_LOCKED`.
   */
  async login(
    name: unknown,
    password: unknown,
  ): Promise<{ cookie: string; csrfToken: string; expiresAt: number; user: UserView }> {
    if (
      typeof name !== 'string' ||
      typeof password !== 'string' ||
      name.length > 128 ||
      password.length > 1024
    )
      throw new TributaryError('TRIB_ERR_AUTH_BAD_CREDENTIALS');
    const now = this.now();
    const locked = this.throttle.lockedFor(name, now);
    if (locked > 0) throw new TributaryError('TRIB_ERR_AUTH_LOCKED', [Math.ceil(locked / 1000)]);
    const user = await this.store.userByName(name);
    this.dummyHash ??= argon2Hash(randomBytes(16).toString('hex'));
    const ok = await argon2Verify(user?.passwordHash ?? (await this.dummyHash), password).catch(() => false);
    if (!user || !ok) {
      this.throttle.failed(name, now);
      throw new TributaryError('TRIB_ERR_AUTH_BAD_CREDENTIALS');
    }
    this.throttle.succeeded(name);
    const cookie = randomBytes(32).toString('base64url');
    const csrfSecret = this.csrf.secretSync();
    const expiresAt = now + this.sessionTtlMs;
    await this.store.insertSession({
      idHash: sha256(cookie),
      userId: user.id,
      csrfSecret,
      createdAt: now,
      expiresAt,
    });
    return { cookie, csrfToken: this.csrf.create(csrfSecret), expiresAt, user: userView(user) };
  }

  async logout(cookie: string): Promise<void> {
    await this.store.deleteSession(sha256(cookie));
  }

  /**
   * The principal of a session cookie and its CSRF secret; throws
   * `TRIB_ERR_AUTH_SESSION_EXPIRED` for a session that ended or a user since removed.
   */
  async sessionPrincipal(cookie: string): Promise<{ principal: Principal; csrfSecret: string }> {
    const s = await this.store.sessionByHash(sha256(cookie), this.now());
    const user = s && (await this.store.userById(s.userId));
    if (!s || !user || !isRole(user.role)) throw new TributaryError('TRIB_ERR_AUTH_SESSION_EXPIRED');
    return {
      principal: {
        kind: 'user',
        id: user.id,
        name: user.name,
        role: user.role,
        sources: user.sources,
        scopes: null,
        userId: user.id,
      },
      csrfSecret: s.csrfSecret,
    };
  }

  /** A CSRF token of the session's secret (login and `GET /admin/v1/me` hand one out). */
  csrfToken(secret: string): string {
    return this.csrf.create(secret);
  }

  /** Whether `token` (the X-CSRF-Token header) was made from the session's secret. */
  csrfValid(secret: string, token: string | undefined): boolean {
    return typeof token === 'string' && token.length < 256 && this.csrf.verify(secret, token);
  }

  // ---- API tokens ----

  /**
   * The principal of an API token (`trb_…`), or undefined when the text is not one. Throws
   * `TRIB_ERR_AUTH_TOKEN_INVALID` for an unknown, revoked or expired token, or one whose user
   * was removed. A user's token never has more rights than the user has now.
   */
  async tokenPrincipal(text: string): Promise<Principal | undefined> {
    if (!text.startsWith(TOKEN_PREFIX)) return undefined;
    const now = this.now();
    const t = await this.store.tokenByHash(sha256(text));
    if (!t || t.revokedAt !== null || (t.expiresAt !== null && t.expiresAt <= now) || !isRole(t.role))
      throw new TributaryError('TRIB_ERR_AUTH_TOKEN_INVALID');
    let role: Role = t.role;
    let sources = t.sources;
    if (t.userId !== null) {
      const user = await this.store.userById(t.userId);
      if (!user || !isRole(user.role)) throw new TributaryError('TRIB_ERR_AUTH_TOKEN_INVALID');
      if (!roleCovers(user.role, role)) role = user.role;
      sources = narrowSources(user.sources, sources);
    }
    const last = this.touched.get(t.id) ?? t.lastUsedAt ?? 0;
    if (now - last >= TOUCH_EVERY_MS) {
      this.touched.set(t.id, now);
      if (this.touched.size > 10_000) this.touched.clear();
      await this.store.touchToken(t.id, now);
    }
    return {
      kind: 'token',
      id: t.id,
      name: t.name,
      role,
      sources,
      scopes: t.scopes === null ? null : t.scopes.filter(isPermission),
      userId: t.userId,
    };
  }

  /**
   * Makes an API token, returned once. By default the caller's own (for its user, with its
   * role and sources); `service: true` or `user` (another user's) need `users:manage`. The
   * token's role, sources and scopes never exceed the creator's.
   */
  async createToken(
    input: {
      name: unknown;
      role?: unknown;
      sources?: unknown;
      scopes?: unknown;
      service?: unknown;
      user?: unknown;
      expiresInDays?: unknown;
    },
    by: Principal,
  ): Promise<{ token: string; record: TokenView }> {
    const name = checkName(input.name, 'name');
    const manage = canManage(by);
    let userId: string | null;
    let owner: UserRecord | undefined;
    if (input.service === true) {
      if (!manage) throw forbidden(by, 'a service token');
      userId = null;
    } else if (input.user !== undefined) {
      const uname = checkName(input.user, 'user');
      owner = await this.store.userByName(uname);
      if (!owner) throw new TributaryError('TRIB_ERR_GOVERNANCE_USER_NOT_FOUND', [uname]);
      if (owner.id !== by.userId && !manage) throw forbidden(by, "another user's token");
      userId = owner.id;
    } else {
      if (by.userId === null)
        throw new TributaryError('TRIB_ERR_GOVERNANCE_BAD_REQUEST', [
          'this caller is no user: create a service token ("service": true) or name the user',
        ]);
      userId = by.userId;
      owner = await this.store.userById(by.userId);
    }
    const ceiling: Role = owner && isRole(owner.role) ? owner.role : by.role;
    const role = input.role === undefined ? ceiling : checkRole(input.role);
    if (!roleCovers(ceiling, role) || !roleCovers(by.role, role))
      throw forbidden(by, `a token with the role ${role}`);
    const asked = checkSources(input.sources);
    const sources = narrowSources(narrowSources(by.sources, owner?.sources ?? null), asked);
    if (asked !== null && sources !== null && sources.length < asked.length)
      throw forbidden(by, 'a token for sources outside its own');
    let scopes: Permission[] | null = null;
    if (input.scopes !== undefined && input.scopes !== null) {
      if (!Array.isArray(input.scopes) || input.scopes.length === 0 || !input.scopes.every(isPermission))
        throw new TributaryError('TRIB_ERR_GOVERNANCE_BAD_REQUEST', [
          'scopes: a non-empty list of permissions (docs/roles.md)',
        ]);
      scopes = [...new Set(input.scopes as Permission[])];
      const beyond = scopes.find((p) => !roleHas(role, p));
      if (beyond)
        throw new TributaryError('TRIB_ERR_GOVERNANCE_BAD_REQUEST', [`the role ${role} has no ${beyond}`]);
    }
    let expiresAt: number | null = null;
    if (input.expiresInDays !== undefined) {
      const days = Number(input.expiresInDays);
      if (!Number.isFinite(days) || days <= 0 || days > 3650)
        throw new TributaryError('TRIB_ERR_GOVERNANCE_BAD_REQUEST', [
          'expiresInDays: a number of days, 1 to 3650',
        ]);
      expiresAt = this.now() + Math.round(days * 86_400_000);
    }
    const token = `${TOKEN_PREFIX}${randomBytes(32).toString('base64url')}`;
    const record: TokenRecord = {
      id: randomUUID(),
      name,
      tokenHash: sha256(token),
      prefix: token.slice(0, TOKEN_PREFIX.length + 6),
      userId,
      role,
      sources,
      scopes,
      createdAt: this.now(),
      createdBy: by.name,
      expiresAt,
      revokedAt: null,
      lastUsedAt: null,
    };
    await this.store.insertToken(record);
    return { token, record: tokenView(record, owner?.name ?? null) };
  }

  /** Tokens the caller may see: its user's own, or every token with `users:manage`. */
  async listTokens(by: Principal): Promise<TokenView[]> {
    const names = new Map((await this.store.listUsers()).map((u) => [u.id, u.name]));
    const tokens = canManage(by)
      ? await this.store.listTokens()
      : by.userId === null
        ? []
        : await this.store.listTokens({ userId: by.userId });
    return tokens.map((t) => tokenView(t, t.userId === null ? null : (names.get(t.userId) ?? null)));
  }

  /** Revokes a token: the caller's own, or any with `users:manage`. */
  async revokeToken(id: string, by: Principal): Promise<void> {
    const t = await this.store.tokenById(id);
    if (!t || (!canManage(by) && (t.userId === null || t.userId !== by.userId)))
      throw new TributaryError('TRIB_ERR_GOVERNANCE_TOKEN_NOT_FOUND', [id]);
    await this.store.revokeToken(id, this.now());
  }

  // ---- audit ----

  async audit(entries: readonly AuditEntry[]): Promise<void> {
    await this.store.appendAudit(entries);
  }

  listAudit(filter: AuditFilter): Promise<StoredAuditEntry[]> {
    return this.store.listAudit(filter);
  }

  /** Purges audit entries past the retention and expired sessions; what was removed. */
  async purge(): Promise<{ audit: number; sessions: number }> {
    const now = this.now();
    return {
      audit: await this.store.purgeAudit(now - this.auditRetentionMs),
      sessions: await this.store.purgeSessions(now),
    };
  }

  /** Purges now and then every `everyMs` (default 1 hour); returns the function that stops it. */
  startPurging(onError: (err: unknown) => void, everyMs = 3_600_000): () => void {
    const run = () => void this.purge().catch(onError);
    run();
    const timer = setInterval(run, everyMs);
    timer.unref();
    return () => clearInterval(timer);
  }

  /** Whether `source` is one of `allowed` (by id or by one of its labels). */
  sourceAllowed(allowed: readonly string[], source: string): boolean {
    if (allowed.includes(source)) return true;
    const labels = this.options.sourceLabels?.(source) ?? [];
    return labels.some((l) => allowed.includes(`label:${l}`));
  }
}

/** Whether the principal may manage users and every token. */
export function canManage(p: Principal): boolean {
  return roleHas(p.role, 'users:manage') && (p.scopes === null || p.scopes.includes('users:manage'));
}

function forbidden(by: Principal, what: string): TributaryError {
  return new TributaryError('TRIB_ERR_AUTH_FORBIDDEN', [by.role, what, 'users:manage or a higher role']);
}

function checkName(v: unknown, field: string): string {
  if (typeof v !== 'string' || !NAME.test(v))
    throw new TributaryError('TRIB_ERR_GOVERNANCE_BAD_REQUEST', [
      `${field}: 1 to 128 letters, digits, ".", "_", "@" or "-", starting with a letter or digit`,
    ]);
  return v;
}

function checkRole(v: unknown): Role {
  if (!isRole(v))
    throw new TributaryError('TRIB_ERR_GOVERNANCE_BAD_REQUEST', [
      'role: one of owner, admin, engineer, analyst, viewer',
    ]);
  return v;
}

/** `sources`: a list of source ids and `label:NAME` entries, or null (every source). */
function checkSources(v: unknown): string[] | null {
  if (v === undefined || v === null) return null;
  const list = typeof v === 'string' ? v.split(',').map((s) => s.trim()) : v;
  if (
    !Array.isArray(list) ||
    list.length === 0 ||
    list.length > 1000 ||
    !list.every((s) => typeof s === 'string' && /^(label:)?[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$/.test(s))
  )
    throw new TributaryError('TRIB_ERR_GOVERNANCE_BAD_REQUEST', [
      'sources: source ids or label:NAME entries, e.g. ["web", "label:eu"]',
    ]);
  return [...new Set(list as string[])];
}

/** The sources both limits allow (null: no limit). */
function narrowSources(a: string[] | null, b: string[] | null): string[] | null {
  if (a === null) return b;
  if (b === null) return a;
  return b.filter((s) => a.includes(s));
}

function userView(u: UserRecord): UserView {
  return {
    id: u.id,
    name: u.name,
    role: u.role as Role,
    sources: u.sources,
    createdAt: iso(u.createdAt)!,
    createdBy: u.createdBy,
  };
}

function tokenView(t: TokenRecord, user: string | null): TokenView {
  return {
    id: t.id,
    name: t.name,
    prefix: t.prefix,
    user,
    role: t.role,
    sources: t.sources,
    scopes: t.scopes,
    createdAt: iso(t.createdAt)!,
    createdBy: t.createdBy,
    expiresAt: iso(t.expiresAt),
    revokedAt: iso(t.revokedAt),
    lastUsedAt: iso(t.lastUsedAt),
  };
}
