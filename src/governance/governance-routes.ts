import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { parseDuration } from '../config/duration.js';
import { TributaryError } from '../errors.js';
import type { AuditFilter, AuditOutcome } from '../store/governance-store.js';
import { allows, jsonBody } from './access-control.js';
import { type Governance, SESSION_COOKIE } from './governance.js';
import type { Principal } from './principal.js';
import { PERMISSIONS, type Permission } from './roles.js';

/**
 * The admin API of users, sessions, tokens and the audit trail. Access is the access layer's
 * (`./route-rules.ts`); these handlers add what depends on the data (a token of one's own or
 * another's, the roles one may give).
 */
export function governanceRoutes(admin: FastifyInstance, governance: Governance | undefined): void {
  const gov = (): Governance => {
    if (!governance) throw new TributaryError('TRIB_ERR_GOVERNANCE_NOT_CONFIGURED');
    return governance;
  };
  const principal = (req: FastifyRequest): Principal => req.principal!;

  admin.post('/admin/v1/session', async (req, reply) => {
    const body = requireBody(req.body);
    const g = gov();
    const s = await g.login(body.user, body.password);
    reply.setCookie(SESSION_COOKIE, s.cookie, {
      httpOnly: true,
      sameSite: 'strict',
      secure: secure(g, req),
      path: '/',
      expires: new Date(s.expiresAt),
    });
    // For the audit trail: the log-in is the user's.
    req.principal = {
      kind: 'user',
      id: s.user.id,
      name: s.user.name,
      role: s.user.role,
      sources: s.user.sources,
      scopes: null,
      userId: s.user.id,
    };
    return { user: s.user, csrfToken: s.csrfToken, expiresAt: new Date(s.expiresAt).toISOString() };
  });

  admin.delete('/admin/v1/session', async (req, reply) => {
    const c = req.cookies[SESSION_COOKIE];
    if (c && governance) await governance.logout(c);
    clearSession(reply, governance, req);
    return { success: true };
  });

  admin.get('/admin/v1/me', async (req) => {
    const p = principal(req);
    const c = req.cookies[SESSION_COOKIE];
    let csrfToken: string | undefined;
    if (p.kind === 'user' && c && governance) {
      const { csrfSecret } = await governance.sessionPrincipal(c);
      csrfToken = governance.csrfToken(csrfSecret);
    }
    return {
      kind: p.kind,
      id: p.id,
      name: p.name,
      role: p.role,
      sources: p.sources,
      scopes: p.scopes,
      permissions: (Object.keys(PERMISSIONS) as Permission[]).filter((x) => allows(p, x)),
      ...(csrfToken ? { csrfToken } : {}),
    };
  });

  admin.get('/admin/v1/users', async () => ({ users: await gov().listUsers() }));
  admin.post('/admin/v1/users', async (req, reply) => {
    const body = requireBody(req.body);
    const made = await gov().addUser(
      { name: body.name, role: body.role, sources: body.sources, password: body.password },
      principal(req),
    );
    return reply.status(201).send(made);
  });
  admin.delete<{ Params: { name: string } }>('/admin/v1/users/:name', async (req) => ({
    removed: await gov().removeUser(req.params.name),
  }));

  admin.get('/admin/v1/tokens', async (req) => ({ tokens: await gov().listTokens(principal(req)) }));
  admin.post('/admin/v1/tokens', async (req, reply) => {
    const body = requireBody(req.body);
    const made = await gov().createToken(
      {
        name: body.name,
        role: body.role,
        sources: body.sources,
        scopes: body.scopes,
        service: body.service,
        user: body.user,
        expiresInDays: body.expiresInDays,
      },
      principal(req),
    );
    return reply.status(201).send({ token: made.token, ...made.record });
  });
  admin.delete<{ Params: { id: string } }>('/admin/v1/tokens/:id', async (req) => {
    await gov().revokeToken(req.params.id, principal(req));
    return { success: true, revoked: req.params.id };
  });

  admin.get<{ Querystring: Record<string, string | undefined> }>('/admin/v1/audit', async (req) => ({
    entries: (await gov().listAudit(auditFilter(req.query))).map((e) => ({
      ...e,
      at: new Date(e.at).toISOString(),
    })),
  }));
}

/** `?since=` (ISO time or a duration back from now: 24h, 7d), `actor`, `action`, `outcome`, `limit`. */
export function auditFilter(q: Record<string, string | undefined>, now = Date.now()): AuditFilter {
  const f: AuditFilter = {};
  if (q.since) {
    let since: number;
    try {
      since = /^\d+(\.\d+)?\s*(ms|s|m|h|d)$/.test(q.since)
        ? now - parseDuration(q.since)
        : Date.parse(q.since);
    } catch {
      since = Number.NaN;
    }
    if (!Number.isFinite(since))
      throw new TributaryError('TRIB_ERR_GOVERNANCE_BAD_REQUEST', [
        'since: an ISO time (2026-01-31T00:00:00Z) or a duration back from now (24h, 7d)',
      ]);
    f.since = since;
  }
  if (q.actor) f.actor = q.actor;
  if (q.action) f.action = q.action;
  if (q.outcome) {
    if (!['ok', 'denied', 'error'].includes(q.outcome))
      throw new TributaryError('TRIB_ERR_GOVERNANCE_BAD_REQUEST', ['outcome: ok, denied or error']);
    f.outcome = q.outcome as AuditOutcome;
  }
  if (q.limit) f.limit = Number(q.limit) || undefined;
  return f;
}

function requireBody(body: unknown): Record<string, unknown> {
  const b = jsonBody(body);
  if (!b) throw new TributaryError('TRIB_ERR_GOVERNANCE_BAD_REQUEST', ['send a JSON object']);
  return b;
}

function secure(g: Governance, req: FastifyRequest): boolean {
  return g.secureCookie === 'always' || (g.secureCookie === 'auto' && req.protocol === 'https');
}

function clearSession(reply: FastifyReply, g: Governance | undefined, req: FastifyRequest): void {
  reply.clearCookie(SESSION_COOKIE, {
    httpOnly: true,
    sameSite: 'strict',
    secure: g ? secure(g, req) : false,
    path: '/',
  });
}
