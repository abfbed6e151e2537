import type { FastifyInstance, FastifyRequest } from 'fastify';
import { type ErrorCode, TributaryError } from '../errors.js';
import { isPersonalTrait, maskProfileView, maskValue } from '../governance/privacy/mask-profile.js';
import { type Explanation, IdentityLookupError, type ProfileView } from './identity-stage.js';
import { type MatchingApi, matchRoutes } from './matching/match-routes.js';
import { type MatchPair, PROBABILISTIC_TAG } from './matching/profile-matching.js';

/**
 * What the Profile API serves from: the embedded `IdentityStage` (memory) or, in scale-out,
 * `PostgresProfiles` (PostgreSQL). Lookups that name nothing throw `IdentityLookupError`.
 */
export interface ProfileApi {
  getProfile(text: string, options?: { events?: number; now?: number }): Promise<ProfileView>;
  search(
    trait: string,
    value: string,
    limit?: number,
  ):
    | { profileId: string; traits: Record<string, unknown> }[]
    | Promise<{ profileId: string; traits: Record<string, unknown> }[]>;
  explain(a: string, b?: string): Promise<Explanation>;
  unmerge(mergeId: string, options?: { keepBlock?: boolean; at?: number }): Promise<{ profiles: string[] }>;
}

export interface ProfileRoutesDeps {
  /** Undefined when identity resolution is off. */
  identity: ProfileApi | undefined;
  /** Probabilistic matching (undefined when off): the review list, runs, and the waterfall in explain. */
  matching?: MatchingApi;
  /** The live profile an identifier names (`type:value` or `profile_id:<id>`), for explain's waterfall. */
  profileIdOf?: (text: string) => string | undefined;
  /**
   * Checks a bearer header against the admin token. The server leaves both checks to its
   * access layer (src/governance/route-rules.ts); an app that mounts the routes alone passes them.
   */
  isAdmin?: (authorization: string | undefined) => boolean;
  /** Checks it against the profile read token (never a write key). */
  isReader?: (authorization: string | undefined) => boolean;
  /**
   * Whether the request reads personal data masked (a role below admin, from
   * `request.principal.role`). Masked: profiles are looked up by `profile_id`
   * only, searched by traits that are not personal only, returned with identifier values and
   * personal traits masked (`src/governance/privacy/mask-profile.ts`); explain is refused.
   */
  maskPersonal?: (req: FastifyRequest) => boolean;
  /** The salt and the configured personal names masking uses (required for `maskPersonal`). */
  masking?: { salt: string; personalColumns: readonly string[] };
}

const LOOKUP_CODES: Record<IdentityLookupError['kind'], ErrorCode> = {
  bad_identifier: 'TRIB_ERR_PROFILE_BAD_IDENTIFIER',
  not_found: 'TRIB_ERR_PROFILE_NOT_FOUND',
  merge_not_found: 'TRIB_ERR_PROFILE_MERGE_NOT_FOUND',
};

function mapped(err: unknown): unknown {
  return err instanceof IdentityLookupError ? new TributaryError(LOOKUP_CODES[err.kind], [err.message]) : err;
}

/**
 * The Profile API: reads (`GET /v1/profiles/{type}:{value}`, search, explain) and unmerge. In
 * the server, who may call each is the access layer's (`profiles:read`, `profiles:write` in
 * src/governance/route-rules.ts); `isAdmin` / `isReader` guard the routes mounted alone.
 */
export function profileRoutes(app: FastifyInstance, deps: ProfileRoutesDeps): void {
  const stage = (): ProfileApi => {
    if (!deps.identity) throw new TributaryError('TRIB_ERR_PROFILE_DISABLED');
    return deps.identity;
  };
  const { isAdmin, isReader } = deps;
  if (isAdmin)
    app.addHook('onRequest', async (req) => {
      const auth = req.headers.authorization;
      const write = req.method !== 'GET';
      if (isAdmin(auth) || (!write && isReader?.(auth))) return;
      throw new TributaryError(write ? 'TRIB_ERR_AUTH_ADMIN_TOKEN' : 'TRIB_ERR_AUTH_PROFILE_TOKEN');
    });
  // Masked: reads of profiles only; the match review list and its evidence show values.
  app.addHook('onRequest', async (req) => {
    const write = req.method !== 'GET';
    const path = req.url.split('?')[0] ?? '';
    if (deps.maskPersonal?.(req) && (write || path.includes('/matches') || path.endsWith('/explain')))
      throw new TributaryError('TRIB_ERR_PRIVACY_MASKED', [`${req.method} ${path}`]);
  });

  const personal = new Set((deps.masking?.personalColumns ?? []).map((c) => c.toLowerCase()));
  /** The masking salt when this request reads masked; throws when it should but cannot. */
  const maskFor = (req: FastifyRequest): string | undefined => {
    if (!deps.maskPersonal?.(req)) return undefined;
    if (!deps.masking) throw new TributaryError('TRIB_ERR_PRIVACY_MASKED', ['masking is not set up']);
    return deps.masking.salt;
  };

  app.get<{ Querystring: { trait?: string; value?: string; limit?: string } }>(
    '/v1/profiles',
    async (req) => {
      const { trait, value } = req.query;
      if (!trait || value === undefined)
        throw new TributaryError('TRIB_ERR_PROFILE_BAD_IDENTIFIER', ['search with ?trait=NAME&value=VALUE']);
      const salt = maskFor(req);
      if (salt !== undefined && isPersonalTrait(trait, personal))
        throw new TributaryError('TRIB_ERR_PRIVACY_MASKED', [`searching by the personal trait ${trait}`]);
      const found = await stage().search(trait, value, Math.min(Number(req.query.limit ?? 50) || 50, 1000));
      if (salt === undefined) return { profiles: found };
      return {
        profiles: found.map((p) => ({
          ...p,
          traits: Object.fromEntries(
            Object.entries(p.traits).map(([k, v]) => [
              k,
              isPersonalTrait(k, personal) ? maskValue(salt, v) : v,
            ]),
          ),
        })),
      };
    },
  );

  app.get<{ Params: { id: string }; Querystring: { events?: string } }>('/v1/profiles/:id', async (req) => {
    const salt = maskFor(req);
    // A lookup by email or user id would confirm a guess: masked, profiles are named by id only.
    if (salt !== undefined && !req.params.id.startsWith('profile_id:'))
      throw new TributaryError('TRIB_ERR_PRIVACY_MASKED', [
        'looking a profile up by a personal identifier (use profile_id:<id>)',
      ]);
    try {
      const view = await stage().getProfile(req.params.id, {
        events: Math.min(Number(req.query.events ?? 20) || 20, 500),
      });
      return salt === undefined ? view : maskProfileView(view, salt, personal);
    } catch (err) {
      throw mapped(err);
    }
  });

  app.get<{ Params: { id: string }; Querystring: { with?: string } }>(
    '/v1/profiles/:id/explain',
    async (req) => {
      if (maskFor(req) !== undefined)
        throw new TributaryError('TRIB_ERR_PRIVACY_MASKED', [
          'explain (it shows identifiers and the events linking them)',
        ]);
      try {
        const explanation = await stage().explain(req.params.id, req.query.with);
        const b = req.query.with;
        if (!deps.matching || !deps.profileIdOf || b === undefined) return explanation;
        // The waterfall of the two profiles under the matching model (also when not merged).
        const x = deps.profileIdOf(req.params.id);
        const y = deps.profileIdOf(b);
        const match = x && y && x !== y ? await deps.matching.explainProfiles(x, y) : undefined;
        // One profile: the probabilistic merges of its component, with the evidence they were made on.
        let matchedBy: MatchPair[] = [];
        if (x && x === y) {
          const view = await stage().getProfile(`profile_id:${x}`, { events: 0 });
          const ids = view.merges
            .filter((m) => m.unmergedAt === null && m.messageId.startsWith(PROBABILISTIC_TAG))
            .map((m) => m.messageId.slice(PROBABILISTIC_TAG.length));
          matchedBy = await deps.matching.pairs(ids);
        }
        return { ...explanation, match: match ?? null, matchedBy };
      } catch (err) {
        throw mapped(err);
      }
    },
  );

  matchRoutes(app, () => {
    if (!deps.matching) throw new TributaryError('TRIB_ERR_MATCH_DISABLED');
    return deps.matching;
  });

  app.post<{ Params: { mergeId: string } }>('/v1/profiles/merges/:mergeId/unmerge', async (req) => {
    let block = true;
    if (req.body instanceof Buffer && req.body.length > 0) {
      try {
        const body = JSON.parse(req.body.toString('utf8')) as { block?: unknown };
        if (body.block === false) block = false;
      } catch (err) {
        throw new TributaryError('TRIB_ERR_COLLECT_INVALID_JSON', [(err as Error).message], { cause: err });
      }
    }
    try {
      const result = await stage().unmerge(req.params.mergeId, { keepBlock: block });
      return { success: true, blocked: block, ...result };
    } catch (err) {
      throw mapped(err);
    }
  });
}
