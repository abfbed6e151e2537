import type { JsonObject } from '../../spec/event.js';
import {
  extractIdentifiers,
  type IdentityRules,
  identifierKey,
  normalizeIdentifier,
  parseIdentifierKey,
} from '../identifiers.js';
import { IdentityEngine, toIdentityEvent } from '../identity-engine.js';
import {
  type Explanation,
  explainDecisions,
  IdentityLookupError,
  type ProfileView,
  profileView,
} from '../identity-stage.js';
import type { ProfileApi } from '../profile-routes.js';
import type { PostgresIdentityStore } from './postgres-identity-store.js';

/**
 * The Profile API served from PostgreSQL (scale-out): every read goes to the shared graph,
 * so any process answers with what every worker has committed. Unmerge runs under the same
 * graph lock as the workers' batches (see `SharedIdentityStage`): it loads the profile the
 * merge lives in, its events and what they touch, runs the engine's unmerge and commits.
 */
export class PostgresProfiles implements ProfileApi {
  constructor(
    private readonly store: PostgresIdentityStore,
    private readonly rules: IdentityRules,
    private readonly options: { newId?: () => string; now?: () => number } = {},
  ) {}

  private key(text: string): string {
    const id = parseIdentifierKey(text);
    if (!id) throw new IdentityLookupError('bad_identifier', `expected type:value, got "${text}"`);
    if (id.type === 'profile_id') return text;
    return identifierKey(id.type, normalizeIdentifier(id.type, id.value, this.rules).value);
  }

  /** The live profile id `text` names (`type:value` or `profile_id:<id>`), if any. */
  async lookup(text: string): Promise<string | undefined> {
    const key = this.key(text);
    const id = parseIdentifierKey(key)!;
    if (id.type === 'profile_id') return this.store.currentProfile(id.value);
    return (await this.store.holders([key])).get(key);
  }

  async getProfile(text: string, options: { events?: number; now?: number } = {}): Promise<ProfileView> {
    const id = await this.lookup(text);
    const [p] = id === undefined ? [] : await this.store.loadProfiles(this.store.pool, [id]);
    if (!p) throw new IdentityLookupError('not_found', `no profile holds ${text}`);
    const [merges, recent] = await Promise.all([
      this.store.mergesOf(p.id),
      this.store.recentEvents(p.id, options.events ?? 20),
    ]);
    return profileView(p, this.rules, merges, recent, options.now ?? Date.now());
  }

  async search(
    trait: string,
    value: string,
    limit = 50,
  ): Promise<{ profileId: string; traits: Record<string, unknown> }[]> {
    const ids = await this.store.searchTrait(trait, value, limit);
    const profiles = await this.store.loadProfiles(this.store.pool, ids);
    const byId = new Map(profiles.map((p) => [p.id, p]));
    return ids.flatMap((id) => {
      const p = byId.get(id);
      return p
        ? [{ profileId: id, traits: Object.fromEntries([...p.traits].map(([k, t]) => [k, t.value])) }]
        : [];
    });
  }

  async explain(a: string, b?: string): Promise<Explanation> {
    const keys = [a, ...(b === undefined ? [] : [b])].map((text) => this.key(text));
    const held = await this.store.holders(keys);
    const holders = keys.map((k) => held.get(k) ?? null);
    const profileIds = [...new Set(holders.filter((h): h is string => h !== null))];
    const decisions = await this.store.decisions(profileIds, keys, 10_000);
    const leftOut = new Set<string>();
    for (const d of decisions) for (const l of d.leftOut) leftOut.add(l.identifier);
    const others = await this.store.holders([...leftOut]);
    return explainDecisions(keys, holders, decisions, (k) => others.get(k));
  }

  /** Splits a merge apart (see `IdentityEngine.unmerge`) under the graph lock, and commits. */
  async unmerge(
    mergeId: string,
    options: { keepBlock?: boolean; at?: number } = {},
  ): Promise<{ profiles: string[] }> {
    const store = this.store;
    const rules = this.rules;
    return store.transaction(async (c) => {
      await store.lockGraph(c);
      const set = await store.loadUnmerge(c, mergeId, (e) => {
        const { identifiers } = extractIdentifiers(JSON.parse(e.json) as JsonObject, e.sourceId, rules);
        return identifiers.map((i) => i.key);
      });
      if (!set) throw new IdentityLookupError('merge_not_found', `no active merge ${mergeId}`);
      const engine = new IdentityEngine(rules, this.options);
      for (const p of set.snapshot.profiles) engine.loadProfile(p);
      for (const m of set.snapshot.merges) engine.loadMerge(m);
      engine.loadMerge(set.merge);
      for (const bl of set.snapshot.blocks) engine.loadBlock(bl);
      const result = engine.unmerge(
        mergeId,
        set.events.map((e) => toIdentityEvent(e, rules)),
        { keepBlock: options.keepBlock ?? true, at: options.at ?? Date.now() },
      );
      await store.write(c, engine.takeChanges(), (id) => engine.profiles.get(id));
      return result;
    });
  }
}
