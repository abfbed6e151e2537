import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { type ConfigEdit, type EntryTarget, rawOf, redact, redactText } from '../config/config-document.js';
import { TributaryError } from '../errors.js';
import { summaryOf } from '../store/config-versions.js';
import type { ChangeContext, ChangeResult, ConfigService } from './config-service.js';

export interface ConfigRoutesDeps {
  /** Undefined where the server keeps no versions (started without its file, scale-out): 404 `TRIB_ERR_CONFIG_NOT_MANAGED`. */
  config?: ConfigService;
  /**
   * Who made a request, stored as a version's author. Default: `admin-token` (the one token
   * that reaches these routes today); the governance layer passes its principal here.
   */
  principal?: (req: FastifyRequest) => string;
}

type Params = Record<string, string>;

/**
 * `/admin/v1/config…`: the running configuration (secrets as `${ENV}` references, never their
 * values), its versions and diffs, and changes of sources, destinations, tracking plans and
 * functions, each a new version applied at once. Registered behind the admin token.
 *
 * A change may carry `If-Match: <version>` (or `"<version>"`, the ETag of `GET /admin/v1/config`):
 * when the configuration is at another version it is refused with 409
 * `TRIB_ERR_CONFIG_VERSION_CONFLICT`. `?message=` is stored with the version.
 */
export function configAdminRoutes(admin: FastifyInstance, deps: ConfigRoutesDeps): void {
  // A server started without its file keeps no versions: the same routes answer
  // TRIB_ERR_CONFIG_NOT_MANAGED (each route has its access rule either way).
  const refuse = (): never => {
    throw new TributaryError('TRIB_ERR_CONFIG_NOT_MANAGED');
  };
  const svc: Pick<ConfigService, 'running' | 'list' | 'version' | 'diff' | 'revert' | 'change'> =
    deps.config ?? {
      running: refuse,
      list: refuse,
      version: refuse,
      diff: refuse,
      revert: refuse,
      change: refuse,
    };
  const ctx = (req: FastifyRequest): ChangeContext => {
    const q = req.query as Record<string, string | undefined>;
    return {
      author: deps.principal?.(req) ?? 'admin-token',
      message: typeof q.message === 'string' && q.message !== '' ? q.message.slice(0, 1000) : undefined,
      ifMatch: ifMatchOf(req.headers['if-match']),
    };
  };
  const answer = (reply: FastifyReply, r: ChangeResult) => {
    reply.header('etag', `"${r.version.n}"`);
    return { version: r.version, changes: r.changes };
  };

  admin.get('/admin/v1/config', (req, reply) => {
    const v = svc.running();
    reply.header('etag', `"${v.n}"`);
    if ((req.query as Params).format === 'yaml') {
      reply.header('content-type', 'text/yaml; charset=utf-8');
      return redactText(v.yaml);
    }
    return { version: summaryOf(v), config: redact(rawOf(v.yaml)) };
  });
  admin.get('/admin/v1/config/versions', async (req) => {
    const limit = Number((req.query as Params).limit);
    return { versions: await svc.list(Number.isFinite(limit) ? limit : undefined) };
  });
  admin.get<{ Params: Params }>('/admin/v1/config/versions/:n', async (req) => {
    const v = await svc.version(versionNumber(req.params.n!));
    return { version: summaryOf(v), config: redact(rawOf(v.yaml)), yaml: redactText(v.yaml) };
  });
  admin.get('/admin/v1/config/diff', async (req) => {
    const q = req.query as Params;
    const to = q.to === undefined ? svc.running().n : versionNumber(q.to);
    const from = q.from === undefined ? to - 1 : versionNumber(q.from);
    return svc.diff(from, to);
  });
  admin.post<{ Params: Params }>('/admin/v1/config/revert/:n', async (req, reply) =>
    answer(reply, await svc.revert(versionNumber(req.params.n!), ctx(req))),
  );

  const routes: [string, (p: Params) => EntryTarget][] = [
    ['/admin/v1/config/sources/:id', (p) => ({ kind: 'sources', id: p.id! })],
    ['/admin/v1/config/destinations/:id', (p) => ({ kind: 'destinations', id: p.id! })],
    ['/admin/v1/config/sources/:id/plans/:name', (p) => ({ kind: 'plans', source: p.id!, name: p.name! })],
    ['/admin/v1/config/sources/:id/plans', (p) => ({ kind: 'plan-list', source: p.id! })],
    [
      '/admin/v1/config/sources/:id/functions/:fid',
      (p) => ({ kind: 'functions', owner: 'sources', ownerId: p.id!, id: p.fid! }),
    ],
    [
      '/admin/v1/config/destinations/:id/functions/:fid',
      (p) => ({ kind: 'functions', owner: 'destinations', ownerId: p.id!, id: p.fid! }),
    ],
  ];
  for (const [url, target] of routes) {
    for (const op of ['put', 'patch'] as const) {
      admin[op]<{ Params: Params }>(url, async (req, reply) => {
        const edit: ConfigEdit = { op, target: target(req.params), body: jsonBody(req.body) };
        return answer(reply, await svc.change(edit, ctx(req)));
      });
    }
    admin.delete<{ Params: Params }>(url, async (req, reply) =>
      answer(reply, await svc.change({ op: 'delete', target: target(req.params) }, ctx(req))),
    );
  }
}

function versionNumber(text: string): number {
  const n = Number(text);
  if (!Number.isSafeInteger(n) || n < 1)
    throw new TributaryError('TRIB_ERR_CONFIG_BAD_REQUEST', [
      `a version is a number from 1: "${text.slice(0, 32)}"`,
    ]);
  return n;
}

/** `If-Match: 7`, `"7"` or `W/"7"`; absent: undefined. */
function ifMatchOf(header: string | string[] | undefined): number | undefined {
  const h = Array.isArray(header) ? header[0] : header;
  if (h === undefined || h.trim() === '' || h.trim() === '*') return undefined;
  const m = /^(?:W\/)?"?(\d+)"?$/.exec(h.trim());
  if (!m)
    throw new TributaryError('TRIB_ERR_CONFIG_BAD_REQUEST', [
      'If-Match takes the version number, e.g. If-Match: "7"',
    ]);
  return Number(m[1]);
}

function jsonBody(body: unknown): unknown {
  if (!(body instanceof Buffer) || body.length === 0)
    throw new TributaryError('TRIB_ERR_CONFIG_BAD_REQUEST', ['send the entry as a JSON body']);
  try {
    return JSON.parse(body.toString('utf8')) as unknown;
  } catch (err) {
    throw new TributaryError(
      'TRIB_ERR_CONFIG_BAD_REQUEST',
      [`the body is not JSON: ${(err as Error).message}`],
      {
        cause: err,
      },
    );
  }
}
