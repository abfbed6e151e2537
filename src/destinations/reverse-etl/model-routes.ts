/**
 * Admin routes of reverse ETL (registered behind the admin token): the models, a run now, and
 * the runs recorded.
 */
import type { FastifyInstance } from 'fastify';
import type { ModelService } from './model-service.js';

type Params = { Params: { id: string }; Querystring: Record<string, string | undefined> };

export interface ModelRoutesDeps {
  models: ModelService;
  /** A run started with `?wait=false` that failed or threw. */
  onError?: (modelId: string, err: unknown) => void;
}

export function modelAdminRoutes(admin: FastifyInstance, deps: ModelRoutesDeps): void {
  const { models } = deps;
  admin.get('/admin/v1/models', async () => ({ models: await models.list() }));
  /** Runs the model and answers its summary; `?wait=false` answers 202 once it started. */
  admin.post<Params>('/admin/v1/models/:id/run', async (req, reply) => {
    // Unknown, disabled or running here: an error answer, not a 202 for a run that never starts.
    models.runnable(req.params.id);
    const run = models.run(req.params.id, req.query.trigger === 'cli' ? 'cli' : 'api');
    if (req.query.wait !== 'false') return run;
    run.then(
      (r) => r.status === 'failed' && deps.onError?.(req.params.id, new Error(r.error)),
      (err: unknown) => deps.onError?.(req.params.id, err),
    );
    return reply.status(202).send({ model: req.params.id, started: true });
  });
  admin.get<Params>('/admin/v1/models/:id/runs', async (req) => {
    const limit = Math.min(Math.max(Number(req.query.limit ?? 20) || 20, 1), 1000);
    return { runs: await models.runs(req.params.id, limit) };
  });
}
