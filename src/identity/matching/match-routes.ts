import type { FastifyInstance } from 'fastify';
import { TributaryError } from '../../errors.js';
import type { PairExplanation } from './matcher.js';
import type { MatchPair, MatchRunSummary, PairStatus } from './profile-matching.js';
import { MatchPairError } from './profile-matching.js';

/** What the match routes serve from (the embedded `ProfileMatching`). */
export interface MatchingApi {
  run(): Promise<MatchRunSummary>;
  list(options?: { status?: PairStatus; limit?: number; evidence?: boolean }): Promise<MatchPair[]>;
  decide(pairId: string, decision: 'accept' | 'reject'): Promise<MatchPair>;
  explainProfiles(a: string, b: string): Promise<PairExplanation | undefined>;
  pairs(pairIds: readonly string[]): Promise<MatchPair[]>;
}

const STATUSES: readonly PairStatus[] = ['review', 'merged', 'accepted', 'rejected', 'refused'];

function mapped(err: unknown): unknown {
  if (!(err instanceof MatchPairError)) return err;
  return new TributaryError(
    err.kind === 'not_in_review' ? 'TRIB_ERR_MATCH_NOT_IN_REVIEW' : 'TRIB_ERR_MATCH_PAIR_NOT_FOUND',
    [err.message],
  );
}

/**
 * The review list and runs of probabilistic matching, under the Profile API's auth (reads:
 * admin or read token; writes: admin):
 * - `GET /v1/profiles/matches?status=review&limit=50`: pairs, strongest first, with the waterfall
 * - `POST /v1/profiles/matches/run`: a full run (estimates the model again)
 * - `POST /v1/profiles/matches/{pairId}/accept` and `/reject`: the decision, kept
 */
export function matchRoutes(app: FastifyInstance, matching: () => MatchingApi): void {
  app.get<{ Querystring: { status?: string; limit?: string } }>('/v1/profiles/matches', async (req) => {
    const status = (req.query.status ?? 'review') as PairStatus;
    if (!STATUSES.includes(status))
      throw new TributaryError('TRIB_ERR_PROFILE_BAD_IDENTIFIER', [
        `status is one of ${STATUSES.join(', ')}`,
      ]);
    const limit = Math.min(Number(req.query.limit ?? 50) || 50, 1000);
    return { pairs: await matching().list({ status, limit }) };
  });
  app.post('/v1/profiles/matches/run', async () => matching().run());
  app.post<{ Params: { pairId: string; decision: string } }>(
    '/v1/profiles/matches/:pairId/:decision',
    async (req) => {
      const { pairId, decision } = req.params;
      if (decision !== 'accept' && decision !== 'reject')
        throw new TributaryError('TRIB_ERR_MATCH_PAIR_NOT_FOUND', [
          `${pairId}/${decision}: use accept or reject`,
        ]);
      try {
        return await matching().decide(pairId, decision);
      } catch (err) {
        throw mapped(err);
      }
    },
  );
}
