import type { FastifyRequest } from 'fastify';
import { PERMISSIONS, type Requirement, ROLES, type Role, roleCovers } from './roles.js';

export type Method = 'GET' | 'POST' | 'PUT' | 'PATCH' | 'DELETE' | 'OPTIONS';

/**
 * Which source a route acts on, for roles limited to some sources:
 * - `none`: no source's data (health, counts, one's own session and tokens)
 * - `every`: data of every source at once (SQL, profiles): refused to a limited role
 * - `{ param | query | body: key }`: the source named there, checked against the limit; a
 *   request that names none acts on every source (refused to a limited role)
 */
export type SourceOf = 'none' | 'every' | { param: string } | { query: string } | { body: string };

/**
 * One route's access rule. Every route of the server has one: the access layer refuses a route
 * without (`TRIB_ERR_AUTH_NO_RULE`), and a test fails when a registered route has none or
 * docs/roles.md differs from this table.
 */
export interface RouteRule {
  method: Method;
  /** Fastify's route pattern, as registered (`/admin/v1/sources/:id/sync`). */
  url: string;
  need: Requirement;
  /** The audit trail's name of the action (`users.add`). */
  action: string;
  source: SourceOf;
  /**
   * Whether a request is written to the audit trail. Default: unsafe methods of routes that
   * need credentials. Refusals (401, 403) of those routes are audited whatever this says.
   */
  audit?: boolean;
  /** What the request is about, for the audit trail. */
  target?: (req: FastifyRequest, body: Record<string, unknown> | undefined) => string | undefined;
  /** More of it (kept small: texts are cut at 10,000 characters). */
  details?: (
    req: FastifyRequest,
    body: Record<string, unknown> | undefined,
  ) => Record<string, unknown> | undefined;
}

const param = (name: string) => (req: FastifyRequest) => (req.params as Record<string, string>)[name];
const query = (req: FastifyRequest) => {
  const q = req.query as Record<string, unknown>;
  return Object.keys(q).length > 0 ? { query: q } : undefined;
};
const bodyField = (name: string) => (_req: FastifyRequest, body: Record<string, unknown> | undefined) =>
  typeof body?.[name] === 'string' ? (body[name] as string) : undefined;

const publicRule = (method: Method, url: string, action: string): RouteRule => ({
  method,
  url,
  need: 'public',
  action,
  source: 'none',
  audit: false,
});

const COLLECT_TYPES = ['track', 'identify', 'page', 'screen', 'group', 'alias', 'batch', 'import'];

/** The access rule of every route (docs/roles.md renders it). */
export const ROUTE_RULES: readonly RouteRule[] = [
  // The collection API, SDK settings and webhooks check write keys and signatures themselves.
  ...COLLECT_TYPES.map((t) => publicRule('POST', `/v1/${t}`, 'collect')),
  publicRule('POST', '/beacon/v1/batch', 'collect'),
  publicRule('POST', '/v1/:short', 'collect'),
  publicRule('POST', '/api/s/:type', 'collect'),
  publicRule('POST', '/api/s/s2s/:type', 'collect'),
  publicRule('GET', '/v1/projects/:writeKey/settings', 'collect.settings'),
  publicRule('GET', '/sourceConfig/', 'collect.settings'),
  publicRule('POST', '/webhooks/:sourceId', 'webhook'),
  publicRule('OPTIONS', '*', 'cors.preflight'),
  publicRule('GET', '/healthz', 'health'),
  publicRule('GET', '/metrics', 'metrics'),

  // Sessions, users, tokens, audit (src/governance/governance-routes.ts).
  {
    method: 'POST',
    url: '/admin/v1/session',
    need: 'public',
    action: 'session.login',
    source: 'none',
    audit: true,
    target: bodyField('user'),
  },
  {
    method: 'DELETE',
    url: '/admin/v1/session',
    need: 'authenticated',
    action: 'session.logout',
    source: 'none',
  },
  { method: 'GET', url: '/admin/v1/me', need: 'authenticated', action: 'me', source: 'none' },
  { method: 'GET', url: '/admin/v1/users', need: 'users:manage', action: 'users.list', source: 'none' },
  {
    method: 'POST',
    url: '/admin/v1/users',
    need: 'users:manage',
    action: 'users.add',
    source: 'none',
    target: bodyField('name'),
    details: (_req, body) => ({ role: body?.role, sources: body?.sources }),
  },
  {
    method: 'DELETE',
    url: '/admin/v1/users/:name',
    need: 'users:manage',
    action: 'users.remove',
    source: 'none',
    target: param('name'),
  },
  // Anyone signed in has tokens of their own; another user's and service tokens need users:manage.
  { method: 'GET', url: '/admin/v1/tokens', need: 'authenticated', action: 'tokens.list', source: 'none' },
  {
    method: 'POST',
    url: '/admin/v1/tokens',
    need: 'authenticated',
    action: 'tokens.create',
    source: 'none',
    target: bodyField('name'),
    details: (_req, body) => ({
      role: body?.role,
      sources: body?.sources,
      scopes: body?.scopes,
      service: body?.service,
      user: body?.user,
    }),
  },
  {
    method: 'DELETE',
    url: '/admin/v1/tokens/:id',
    need: 'authenticated',
    action: 'tokens.revoke',
    source: 'none',
    target: param('id'),
  },
  {
    method: 'GET',
    url: '/admin/v1/audit',
    need: 'audit:read',
    action: 'audit.read',
    source: 'none',
    audit: true,
  },

  // The warehouse, counts and failed events.
  {
    method: 'POST',
    url: '/admin/v1/query',
    need: 'query:run',
    action: 'query.run',
    source: 'every',
    details: (_req, body) => (typeof body?.sql === 'string' ? { sql: body.sql } : undefined),
  },
  { method: 'GET', url: '/admin/v1/sources', need: 'status:read', action: 'sources.list', source: 'none' },
  { method: 'GET', url: '/admin/v1/stats', need: 'status:read', action: 'stats', source: 'none' },
  {
    method: 'GET',
    url: '/admin/v1/failed',
    need: 'failed:manage',
    action: 'failed.list',
    source: { query: 'source' },
  },
  {
    method: 'GET',
    url: '/admin/v1/failed/:id',
    need: 'failed:manage',
    action: 'failed.show',
    source: 'every',
    target: param('id'),
  },
  {
    method: 'POST',
    url: '/admin/v1/failed/retry',
    need: 'failed:manage',
    action: 'failed.retry',
    source: { body: 'source' },
    target: bodyField('source'),
    details: (_req, body) => ({ ids: body?.ids, stage: body?.stage, code: body?.code, limit: body?.limit }),
  },

  // Pull sources.
  ...(
    [
      ['POST', 'check'],
      ['GET', 'discover'],
      ['POST', 'discover'],
      ['POST', 'sync'],
      ['GET', 'runs'],
      ['POST', 'import'],
    ] as const
  ).map(
    ([method, verb]): RouteRule => ({
      method,
      url: `/admin/v1/sources/:id/${verb}`,
      need: 'sources:operate',
      action: `sources.${verb}`,
      source: { param: 'id' },
      target: param('id'),
      details: query,
    }),
  ),

  // The Profile API: reads of personal data are audited.
  {
    method: 'GET',
    url: '/v1/profiles',
    need: 'profiles:read',
    action: 'profiles.search',
    source: 'every',
    audit: true,
    details: query,
  },
  {
    method: 'GET',
    url: '/v1/profiles/:id',
    need: 'profiles:read',
    action: 'profiles.read',
    source: 'every',
    audit: true,
    target: param('id'),
  },
  {
    method: 'GET',
    url: '/v1/profiles/:id/explain',
    need: 'profiles:read',
    action: 'profiles.explain',
    source: 'every',
    audit: true,
    target: param('id'),
    details: query,
  },
  {
    method: 'GET',
    url: '/v1/profiles/matches',
    need: 'profiles:read',
    action: 'profiles.matches',
    source: 'every',
    audit: true,
    details: query,
  },
  {
    method: 'POST',
    url: '/v1/profiles/matches/run',
    need: 'profiles:write',
    action: 'profiles.match-run',
    source: 'every',
  },
  {
    method: 'POST',
    url: '/v1/profiles/matches/:pairId/:decision',
    need: 'profiles:write',
    action: 'profiles.match-decide',
    source: 'every',
    target: (req) => `${param('pairId')(req)}/${param('decision')(req)}`,
  },
  {
    method: 'POST',
    url: '/v1/profiles/merges/:mergeId/unmerge',
    need: 'profiles:write',
    action: 'profiles.unmerge',
    source: 'every',
    target: param('mergeId'),
  },

  // The configuration through the API (src/server/config-routes.ts).
  { method: 'GET', url: '/admin/v1/config', need: 'config:read', action: 'config.read', source: 'none' },
  {
    method: 'GET',
    url: '/admin/v1/config/versions',
    need: 'config:read',
    action: 'config.versions',
    source: 'none',
  },
  {
    method: 'GET',
    url: '/admin/v1/config/versions/:n',
    need: 'config:read',
    action: 'config.version',
    source: 'none',
  },
  { method: 'GET', url: '/admin/v1/config/diff', need: 'config:read', action: 'config.diff', source: 'none' },
  {
    method: 'POST',
    url: '/admin/v1/config/revert/:n',
    need: 'config:write',
    action: 'config.revert',
    source: 'none',
    target: param('n'),
  },
  ...configEntryRules('/admin/v1/config/sources/:id', 'config:write', 'config.sources', { param: 'id' }),
  ...configEntryRules('/admin/v1/config/destinations/:id', 'config:write', 'config.destinations', 'none'),
  ...configEntryRules('/admin/v1/config/sources/:id/plans/:name', 'plans:write', 'config.plans', {
    param: 'id',
  }),
  ...configEntryRules('/admin/v1/config/sources/:id/plans', 'plans:write', 'config.plans', { param: 'id' }),
  ...configEntryRules('/admin/v1/config/sources/:id/functions/:fid', 'plans:write', 'config.functions', {
    param: 'id',
  }),
  ...configEntryRules(
    '/admin/v1/config/destinations/:id/functions/:fid',
    'config:write',
    'config.functions',
    'none',
  ),

  // Reverse ETL, trace and replay (src/destinations/reverse-etl/, src/observe/lineage/, src/destinations/replay/).
  { method: 'GET', url: '/admin/v1/models', need: 'status:read', action: 'models.list', source: 'none' },
  {
    method: 'POST',
    url: '/admin/v1/models/:id/run',
    need: 'config:write',
    action: 'models.run',
    source: 'every',
    target: param('id'),
  },
  {
    method: 'GET',
    url: '/admin/v1/models/:id/runs',
    need: 'status:read',
    action: 'models.runs',
    source: 'none',
    target: param('id'),
  },
  {
    method: 'GET',
    url: '/admin/v1/trace/:messageId',
    need: 'failed:manage',
    action: 'trace',
    source: 'every',
    audit: true,
    target: param('messageId'),
  },
  {
    method: 'POST',
    url: '/admin/v1/replay',
    need: 'config:write',
    action: 'replay.start',
    source: { body: 'source' },
    details: (_req, body) => ({
      from: body?.from,
      to: body?.to,
      destinations: body?.destinations,
      dryRun: body?.dryRun,
    }),
  },
  { method: 'GET', url: '/admin/v1/replay', need: 'status:read', action: 'replay.list', source: 'none' },
  {
    method: 'GET',
    url: '/admin/v1/replay/:id',
    need: 'status:read',
    action: 'replay.status',
    source: 'none',
    target: param('id'),
  },

  // Deletion of a person's data (src/governance/privacy/). The identities are not written to
  // the audit trail: it would keep what the request erases.
  {
    method: 'POST',
    url: '/admin/v1/privacy/deletions',
    need: 'privacy:delete',
    action: 'privacy.delete',
    source: 'every',
    details: (_req, body) => ({
      identities: Array.isArray(body?.identities) ? body.identities.length : undefined,
    }),
  },
  {
    method: 'GET',
    url: '/admin/v1/privacy/deletions',
    need: 'privacy:delete',
    action: 'privacy.list',
    source: 'none',
  },
  {
    method: 'GET',
    url: '/admin/v1/privacy/deletions/:id',
    need: 'privacy:delete',
    action: 'privacy.status',
    source: 'none',
    target: param('id'),
  },
];

/** PUT, PATCH and DELETE of one entry of the configuration. */
function configEntryRules(url: string, need: Requirement, action: string, source: SourceOf): RouteRule[] {
  return (['PUT', 'PATCH', 'DELETE'] as const).map((method) => ({
    method,
    url,
    need,
    action: `${action}.${method === 'DELETE' ? 'remove' : 'change'}`,
    source,
    target: (req: FastifyRequest) => req.url.split('?')[0],
  }));
}

const index = new Map<string, RouteRule>(ROUTE_RULES.map((r) => [`${r.method} ${r.url}`, r]));

/** The rule of a route (HEAD routes follow their GET), or undefined. */
export function ruleFor(method: string, url: string): RouteRule | undefined {
  return index.get(`${method === 'HEAD' ? 'GET' : method} ${url}`);
}

/** Whether a request under `rule` goes to the audit trail when it succeeds. */
export function audited(rule: RouteRule): boolean {
  return rule.audit ?? (rule.need !== 'public' && rule.method !== 'GET' && rule.method !== 'OPTIONS');
}

/** The lowest role a requirement admits (public and authenticated: every caller / every role). */
export function lowestRole(need: Requirement): Role | undefined {
  return need === 'public' ? undefined : need === 'authenticated' ? 'viewer' : PERMISSIONS[need];
}

function sourceText(s: SourceOf): string {
  if (typeof s === 'string') return s === 'none' ? '' : 'all sources';
  if ('param' in s) return `path :${s.param}`;
  if ('query' in s) return `?${s.query}=`;
  return `body "${s.body}"`;
}

/**
 * The rights table of docs/roles.md, rendered from `ROUTE_RULES` (a test compares the two):
 * one row per route that needs credentials.
 */
export function renderRulesTable(): string {
  const head = `| Method | Route | Needs | ${ROLES.join(' | ')} | Source scope | Audited |`;
  const sep = `|---|---|---|${ROLES.map(() => '---').join('|')}|---|---|`;
  const rows = ROUTE_RULES.filter((r) => r.need !== 'public' || audited(r)).map((r) => {
    const lowest = lowestRole(r.need);
    const cells = ROLES.map((role) => (lowest === undefined || roleCovers(role, lowest) ? '✓' : ''));
    return `| ${r.method} | \`${r.url}\` | ${r.need} | ${cells.join(' | ')} | ${sourceText(r.source)} | ${audited(r) ? 'yes' : 'refusals'} |`;
  });
  return [head, sep, ...rows].join('\n');
}
