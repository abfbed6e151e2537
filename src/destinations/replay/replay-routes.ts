import type { FastifyInstance } from 'fastify';
import { TributaryError } from '../../errors.js';
import type { ReplayRequest } from './replay.js';
import type { ReplayService } from './replay-service.js';

type Query = { Querystring: Record<string, string | undefined> };

function parseBody(body: unknown): Record<string, unknown> {
  let v: unknown = body;
  if (body instanceof Buffer) {
    try {
      v = body.length === 0 ? {} : JSON.parse(body.toString('utf8'));
    } catch (err) {
      throw new TributaryError('TRIB_ERR_REPLAY_BAD_REQUEST', [
        `the body is not JSON (${(err as Error).message})`,
      ]);
    }
  }
  if (typeof v !== 'object' || v === null || Array.isArray(v))
    throw new TributaryError('TRIB_ERR_REPLAY_BAD_REQUEST', ['the body must be a JSON object']);
  return v as Record<string, unknown>;
}

function time(v: unknown, name: string): number {
  const ms = typeof v === 'number' ? v : typeof v === 'string' ? Date.parse(v) : Number.NaN;
  if (!Number.isFinite(ms))
    throw new TributaryError('TRIB_ERR_REPLAY_BAD_REQUEST', [
      `"${name}" must be an ISO-8601 time or epoch milliseconds`,
    ]);
  return ms;
}

/** The replay request of a `POST /admin/v1/replay` body. */
export function replayRequest(body: unknown): ReplayRequest & { wait: boolean } {
  const b = parseBody(body);
  if (typeof b.source !== 'string' || b.source === '')
    throw new TributaryError('TRIB_ERR_REPLAY_BAD_REQUEST', ['"source" must name a source']);
  const destinations = b.destinations ?? (typeof b.destination === 'string' ? [b.destination] : undefined);
  if (
    destinations !== undefined &&
    !(Array.isArray(destinations) && destinations.every((d) => typeof d === 'string'))
  )
    throw new TributaryError('TRIB_ERR_REPLAY_BAD_REQUEST', [
      '"destinations" must be a list of destination ids',
    ]);
  if (b.rate !== undefined && (typeof b.rate !== 'number' || !(b.rate > 0)))
    throw new TributaryError('TRIB_ERR_REPLAY_BAD_REQUEST', [
      '"rate" must be a positive number of events per second',
    ]);
  return {
    sourceId: b.source,
    fromMs: time(b.from, 'from'),
    toMs: time(b.to, 'to'),
    destinations: destinations as string[] | undefined,
    dryRun: b.dryRun === true,
    rate: b.rate as number | undefined,
    requestedBy: typeof b.requestedBy === 'string' ? b.requestedBy.slice(0, 200) : 'admin api',
    wait: b.wait === true,
  };
}

/**
 * Replay on the admin API (behind the admin token):
 * - `POST /admin/v1/replay` `{source, from, to, destinations?, dryRun?, rate?, wait?}`: 202
 *   `{runId}`, or with `wait` 200 and the finished run;
 * - `GET /admin/v1/replay[?limit=N]`: runs, newest first;
 * - `GET /admin/v1/replay/:id`: one run, with its live counts while it runs.
 */
export function replayAdminRoutes(admin: FastifyInstance, replays: ReplayService): void {
  admin.post('/admin/v1/replay', async (req, reply) => {
    const { wait, ...request } = replayRequest(req.body);
    const { runId, done } = await replays.start(request);
    if (!wait) return reply.status(202).send({ runId });
    await done;
    return reply.status(200).send(await replays.get(runId));
  });
  admin.get<Query>('/admin/v1/replay', async (req) => {
    const limit = Math.min(Math.max(Number(req.query.limit ?? 20) || 20, 1), 1000);
    return { runs: await replays.list(limit) };
  });
  admin.get<{ Params: { id: string } }>('/admin/v1/replay/:id', async (req) => replays.get(req.params.id));
}
