/**
 * Admin routes of deletion requests (registered behind the admin token, like
 * `src/sources/source-routes.ts`).
 */
import type { FastifyInstance } from 'fastify';
import { TributaryError } from '../../errors.js';
import type { DeletionService } from './deletion-service.js';

type IdParams = { Params: { id: string } };

export function privacyAdminRoutes(admin: FastifyInstance, deletions: DeletionService): void {
  admin.post('/admin/v1/privacy/deletions', async (req, reply) => {
    let body: unknown;
    try {
      body =
        req.body instanceof Buffer && req.body.length > 0 ? JSON.parse(req.body.toString('utf8')) : undefined;
    } catch (err) {
      throw new TributaryError('TRIB_ERR_PRIVACY_BAD_REQUEST', ['the body is not JSON'], { cause: err });
    }
    const identities = (body as { identities?: unknown } | undefined)?.identities;
    if (!Array.isArray(identities))
      throw new TributaryError('TRIB_ERR_PRIVACY_BAD_REQUEST', ['"identities" must be an array']);
    const reg = await deletions.request(identities);
    return reply.status(202).send(reg);
  });
  admin.get('/admin/v1/privacy/deletions', async (req) => {
    const limit = Math.min(Math.max(Number((req.query as { limit?: string }).limit ?? 100) || 100, 1), 1000);
    return { deletions: await deletions.list(limit) };
  });
  admin.get<IdParams>('/admin/v1/privacy/deletions/:id', async (req) => {
    const reg = await deletions.get(req.params.id);
    if (!reg) throw new TributaryError('TRIB_ERR_PRIVACY_NOT_FOUND', [req.params.id]);
    return reg;
  });
}
