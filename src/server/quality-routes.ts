import type { FastifyInstance } from 'fastify';
import type { DeliveryProgress } from '../destinations/delivery/delivery-metrics.js';
import { TributaryError } from '../errors.js';
import type { SourceStats } from '../observe/stats.js';
import type { FailedFilter, FailedStore } from '../pipeline/failed-store.js';

export interface QualityRoutesDeps {
  failed: FailedStore;
  stats(): Promise<SourceStats[]>;
  /** Progress of each streaming destination (queue, lag, breaker, counts). */
  destinations?(): DeliveryProgress[];
}

/** Admin routes of the failed-event store and the reconciled counts (registered behind the admin token). */
export function qualityAdminRoutes(admin: FastifyInstance, deps: QualityRoutesDeps): void {
  admin.get('/admin/v1/stats', async () => ({
    sources: await deps.stats(),
    destinations: deps.destinations?.() ?? [],
  }));
  admin.get<{ Querystring: Record<string, string | undefined> }>('/admin/v1/failed', async (req) => {
    const q = req.query;
    return {
      failed: await deps.failed.list({
        source: q.source,
        stage: q.stage,
        code: q.code,
        includeRetried: q.all === 'true',
        limit: q.limit === undefined ? undefined : Number(q.limit) || undefined,
      }),
    };
  });
  admin.get<{ Params: { id: string } }>('/admin/v1/failed/:id', (req) => deps.failed.show(req.params.id));
  admin.post('/admin/v1/failed/retry', async (req) => {
    const body = parseBody(req.body);
    const str = (k: string) => (typeof body[k] === 'string' ? (body[k] as string) : undefined);
    const ids = Array.isArray(body.ids)
      ? body.ids.filter((x): x is string => typeof x === 'string')
      : undefined;
    const filter: FailedFilter = { ids, source: str('source'), stage: str('stage'), code: str('code') };
    if (typeof body.limit === 'number') filter.limit = body.limit;
    return { results: await deps.failed.retry(filter, body.wait === true) };
  });
}

function parseBody(body: unknown): Record<string, unknown> {
  if (!(body instanceof Buffer) || body.length === 0) return {};
  try {
    const v = JSON.parse(body.toString('utf8')) as unknown;
    if (typeof v === 'object' && v !== null && !Array.isArray(v)) return v as Record<string, unknown>;
  } catch (err) {
    throw new TributaryError('TRIB_ERR_FAILED_BAD_REQUEST', [(err as Error).message], { cause: err });
  }
  throw new TributaryError('TRIB_ERR_FAILED_BAD_REQUEST', ['send a JSON object']);
}
