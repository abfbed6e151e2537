import { createHash, timingSafeEqual } from 'node:crypto';
import cookie from '@fastify/cookie';
import type { FastifyInstance, FastifyRequest } from 'fastify';
import { type ErrorCode, TributaryError } from '../errors.js';
import type { AuditEntry } from '../store/governance-store.js';
import { type Governance, SESSION_COOKIE } from './governance.js';
import type { Principal } from './principal.js';
import { type Permission, roleHas } from './roles.js';
import { audited, type RouteRule, ruleFor } from './route-rules.js';

export interface AccessControlOptions {
  /** Users, sessions, API tokens and the audit trail; without it only the two tokens below work. */
  governance?: Governance;
  /** `TRIBUTARY_ADMIN_TOKEN` (or the workspace's admin-token file): an owner. */
  adminToken: string;
  /** `identity.readToken`: profile reads only. */
  profileReadToken?: string;
  /** An audit entry that could not be written (the request was answered already). */
  onAuditError?: (err: unknown) => void;
}

/** The routes the server registered, as `METHOD url` (HEAD routes left out: they follow GET). */
export interface RegisteredRoutes {
  list(): { method: string; url: string }[];
}

interface RequestState {
  rule: RouteRule | undefined;
  /** The session's CSRF secret, when the session cookie authenticated the request. */
  csrfSecret?: string;
  /** Code of the error the request ended with. */
  code?: string;
}

const UNSAFE = new Set(['POST', 'PUT', 'PATCH', 'DELETE']);
const MAX_DETAIL = 10_000;

const digest = (s: string) => createHash('sha256').update(s).digest();
/** Compares digests, so neither the length nor the content of the secret leaks through timing. */
function sameSecret(given: string, secret: string): boolean {
  return timingSafeEqual(digest(given), digest(secret));
}

export const ADMIN_TOKEN_PRINCIPAL: Principal = {
  kind: 'admin-token',
  id: 'admin-token',
  name: 'admin-token',
  role: 'owner',
  sources: null,
  scopes: null,
  userId: null,
};

/**
 * The profile read token reads profiles as they are stored (role admin, scope profiles:read),
 * as it did before roles existed.
 */
export const READ_TOKEN_PRINCIPAL: Principal = {
  kind: 'read-token',
  id: 'read-token',
  name: 'read-token',
  role: 'admin',
  sources: null,
  scopes: ['profiles:read'],
  userId: null,
};

/** Whether the principal holds the permission (its role has it and its scopes allow it). */
export function allows(p: Principal, permission: Permission): boolean {
  return roleHas(p.role, permission) && (p.scopes === null || p.scopes.includes(permission));
}

/**
 * The one access layer of the HTTP API. Every route's rule (`./route-rules.ts`) is looked up
 * when a request arrives:
 * - no rule: refused with `TRIB_ERR_AUTH_NO_RULE` (fail closed)
 * - `public`: passed on (the collection API checks write keys itself)
 * - else the caller is authenticated (bearer: admin token, read token or API token; or the
 *   session cookie, with `X-CSRF-Token` on unsafe methods), `request.principal` is set, and its
 *   permission and source scope are checked: 401 `TRIB_ERR_AUTH_*`, 403 `TRIB_ERR_AUTH_FORBIDDEN`.
 * Once answered, requests the rule audits, and every refusal of a non-public route, go to the
 * audit trail.
 *
 * Install before any route is registered, so that every route is seen.
 */
export async function installAccessControl(
  app: FastifyInstance,
  opts: AccessControlOptions,
): Promise<RegisteredRoutes> {
  await app.register(cookie);
  const routes: { method: string; url: string }[] = [];
  app.addHook('onRoute', (route) => {
    const methods = Array.isArray(route.method) ? route.method : [route.method];
    for (const method of methods) if (method !== 'HEAD') routes.push({ method, url: route.url });
  });
  const states = new WeakMap<FastifyRequest, RequestState>();
  const { governance } = opts;

  const authenticate = async (req: FastifyRequest, rule: RouteRule, st: RequestState): Promise<Principal> => {
    const missing = (): TributaryError =>
      new TributaryError(
        rule.need === 'profiles:read' ? 'TRIB_ERR_AUTH_PROFILE_TOKEN' : 'TRIB_ERR_AUTH_ADMIN_TOKEN',
      );
    const header = req.headers.authorization;
    if (header !== undefined) {
      const bearer = /^Bearer\s+(\S{1,512})\s*$/i.exec(header)?.[1];
      if (bearer === undefined) throw missing();
      if (sameSecret(bearer, opts.adminToken)) return ADMIN_TOKEN_PRINCIPAL;
      if (opts.profileReadToken !== undefined && sameSecret(bearer, opts.profileReadToken))
        return READ_TOKEN_PRINCIPAL;
      const p = await governance?.tokenPrincipal(bearer);
      if (p) return p;
      throw missing();
    }
    const session = req.cookies[SESSION_COOKIE];
    if (session && governance) {
      const { principal, csrfSecret } = await governance.sessionPrincipal(session);
      st.csrfSecret = csrfSecret;
      return principal;
    }
    throw missing();
  };

  app.addHook('onRequest', async (req) => {
    const url = req.routeOptions.url;
    if (url === undefined) return; // no route: the not-found handler answers
    const rule = ruleFor(req.method, url);
    const st: RequestState = { rule };
    states.set(req, st);
    if (!rule) throw new TributaryError('TRIB_ERR_AUTH_NO_RULE', [`${req.method} ${url}`]);
    if (rule.need === 'public') return;
    const principal = await authenticate(req, rule, st);
    req.principal = principal;
    if (rule.need !== 'authenticated' && !allows(principal, rule.need))
      throw new TributaryError('TRIB_ERR_AUTH_FORBIDDEN', [
        principal.role,
        `${req.method} ${url}`,
        rule.need,
      ]);
    if (st.csrfSecret !== undefined && UNSAFE.has(req.method)) {
      const header = req.headers['x-csrf-token'];
      if (!governance!.csrfValid(st.csrfSecret, Array.isArray(header) ? header[0] : header))
        throw new TributaryError('TRIB_ERR_AUTH_CSRF');
    }
  });

  // After the body is read: the source a request names may be in it.
  app.addHook('preHandler', async (req) => {
    const st = states.get(req);
    const p = req.principal;
    if (!st?.rule || !p || p.sources === null || st.rule.source === 'none') return;
    const s = st.rule.source;
    let source: string | undefined;
    if (s !== 'every') {
      const from =
        'param' in s
          ? (req.params as Record<string, unknown>)[s.param]
          : 'query' in s
            ? (req.query as Record<string, unknown>)[s.query]
            : jsonBody(req.body)?.[s.body];
      if (typeof from === 'string' && from !== '') source = from;
    }
    const allowed =
      source !== undefined &&
      (governance ? governance.sourceAllowed(p.sources, source) : p.sources.includes(source));
    if (!allowed)
      throw new TributaryError('TRIB_ERR_AUTH_FORBIDDEN', [
        `${p.role} limited to ${p.sources.join(', ')}`,
        `${req.method} ${st.rule.url}${source === undefined ? ' on every source' : ` on source ${source}`}`,
        source === undefined
          ? 'a role for every source (name a source where the route takes one)'
          : 'that source',
      ]);
  });

  app.addHook('onError', async (req, _reply, err) => {
    const st = states.get(req);
    if (st) st.code = err instanceof TributaryError ? err.code : ((err as { code?: string }).code ?? 'error');
  });

  app.addHook('onResponse', async (req, reply) => {
    const st = states.get(req);
    const rule = st?.rule;
    if (!governance || !st) return;
    const status = reply.statusCode;
    const refused = status === 401 || status === 403 || st.code === 'TRIB_ERR_AUTH_LOCKED';
    if (!rule) {
      // A route without a rule was refused: that is an authorization failure too.
      await write(req, st, undefined, status);
      return;
    }
    if (!audited(rule) && !(refused && rule.need !== 'public')) return;
    await write(req, st, rule, status);
  });

  const write = async (
    req: FastifyRequest,
    st: RequestState,
    rule: RouteRule | undefined,
    status: number,
  ) => {
    const p = req.principal;
    const body = rule && (rule.target || rule.details) ? jsonBody(req.body) : undefined;
    let target: string | undefined;
    let details: Record<string, unknown> | undefined;
    try {
      target = rule?.target?.(req, body);
      details = rule?.details?.(req, body);
    } catch {
      // The audit line is written without them.
    }
    const refused = status === 401 || status === 403 || status === 429;
    const entry: AuditEntry = {
      at: Date.now(),
      actorKind: p?.kind ?? 'anonymous',
      actorId: p?.id ?? null,
      // A failed log-in names who was tried.
      actorName: p?.name ?? (rule?.action === 'session.login' ? (target ?? null) : null),
      role: p?.role ?? null,
      ip: req.ip,
      action: rule?.action ?? 'unknown-route',
      method: req.method,
      route: req.routeOptions.url ?? req.url.split('?')[0]!,
      target: target === undefined ? null : cut(target),
      details: details === undefined ? null : trimDetails(details),
      outcome: status < 400 ? 'ok' : refused ? 'denied' : 'error',
      status,
      code: (st.code as ErrorCode | undefined) ?? null,
    };
    try {
      await governance!.audit([entry]);
    } catch (err) {
      opts.onAuditError?.(err);
    }
  };

  const registered = { list: () => [...routes] };
  installed.set(app, registered);
  return registered;
}

const installed = new WeakMap<FastifyInstance, RegisteredRoutes>();

/** The routes registered on an app the access layer was installed on (for the rules test). */
export function registeredRoutes(app: FastifyInstance): { method: string; url: string }[] {
  return installed.get(app)?.list() ?? [];
}

/** The JSON object of a buffered body, or undefined (not JSON, not an object, or a stream). */
export function jsonBody(body: unknown): Record<string, unknown> | undefined {
  if (!(body instanceof Buffer) || body.length === 0 || body.length > 1024 * 1024) return undefined;
  try {
    const v = JSON.parse(body.toString('utf8')) as unknown;
    return typeof v === 'object' && v !== null && !Array.isArray(v)
      ? (v as Record<string, unknown>)
      : undefined;
  } catch {
    return undefined;
  }
}

function cut(text: string): string {
  return text.length > MAX_DETAIL ? `${text.slice(0, MAX_DETAIL)}…` : text;
}

function trimDetails(details: Record<string, unknown>): Record<string, unknown> | null {
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(details)) {
    if (v === undefined) continue;
    out[k] = typeof v === 'string' ? cut(v) : v;
  }
  const text = JSON.stringify(out);
  if (Object.keys(out).length === 0) return null;
  return text.length > MAX_DETAIL * 2 ? { truncated: cut(text) } : out;
}
