import type { ErasureTarget } from '../governance/privacy/erasure.js';
import type { EventFeed, FeedSubscription } from '../pipeline/event-feed.js';
import { Slice } from '../platform/async/slice.js';
import { Turns } from '../platform/async/turns.js';
import type { StoredEvent } from '../store/store.js';
import { type IdentityRules, identifierKey, normalizeIdentifier, parseIdentifierKey } from './identifiers.js';
import {
  type Decision,
  type IdentityChanges,
  IdentityEngine,
  type IdentityEngineOptions,
  type MatchedMerge,
  type MergeRecord,
  type Profile,
  toIdentityEvent,
} from './identity-engine.js';
import type { IdentityStore, ProfileEvent } from './identity-store.js';
import { computedValue } from './traits.js';

/** A profile as the Profile API returns it. */
export interface ProfileView {
  profileId: string;
  identifiers: { type: string; value: string; firstSeen: string; sourceId: string }[];
  traits: Record<string, unknown>;
  computedTraits: Record<string, unknown>;
  firstSeen: string;
  lastSeen: string;
  eventCount: number;
  recentEvents: ProfileEvent[];
  merges: (Omit<MergeRecord, 'timestamp' | 'unmergedAt'> & {
    timestamp: string;
    unmergedAt: string | null;
  })[];
}

export interface Explanation {
  identifiers: { identifier: string; profileId: string | null }[];
  sameProfile: boolean;
  summary: string;
  /** The events that link the identifiers, in log order (when they are one person). */
  path: Decision[];
  /** Events that carried them but were refused a link (limits, blocks, blocked values). */
  refused: Decision[];
}

/** What identity resolution did with one stored event (`tributary trace`). */
export interface EventIdentity {
  /** The identifiers the current rules find in the event (`type:value`). */
  identifiers: string[];
  /** The stage's decision for the event (undefined while the stage has not reached it). */
  decision?: Decision;
  /** The profile the event belongs to now, following later merges. */
  profileId?: string;
  /** Merges the event caused. */
  merges: MergeRecord[];
  /** Merges of the profile's component since, which moved the event into its current profile. */
  laterMerges: MergeRecord[];
}

export interface StageOptions extends IdentityEngineOptions {
  onError?: (err: unknown) => void;
  /** Most events per feed call. Default 20,000. */
  maxBatch?: number;
  /** Called after each committed transaction (metrics). */
  onCommitted?: (changes: IdentityChanges) => void;
}

/** Thrown for lookups that name nothing; the routes map it to 404 / 400. */
export class IdentityLookupError extends Error {
  constructor(
    readonly kind: 'bad_identifier' | 'not_found' | 'merge_not_found',
    message: string,
  ) {
    super(message);
  }
}

const iso = (ms: number) => new Date(ms).toISOString();

/**
 * The identity stage: follows the `events` table through the feed, resolves each event with
 * the in-memory engine, and commits the batch's changes with the feed offset in one store
 * transaction, so every event is resolved exactly once. It also serves the Profile API
 * (reads from memory, history from the store) and runs unmerges between batches.
 */
export class IdentityStage {
  private engine: IdentityEngine;
  private readonly turns = new Turns();
  private subscription: FeedSubscription | undefined;
  private committedOffset = 0;
  /** The store transaction of the last batch, running while the next batch is resolved. */
  private inflight: Promise<void> | undefined;
  /**
   * A failed background commit that an unmerge, not the feed, came across: the feed still
   * counts that batch as handled, so the next `handle` or `flush` throws it, sending the feed
   * back to the stored offset.
   */
  private lost: unknown;

  private constructor(
    private readonly store: IdentityStore,
    private readonly rules: IdentityRules,
    private readonly options: StageOptions,
  ) {
    this.engine = new IdentityEngine(rules, options);
  }

  static async open(
    store: IdentityStore,
    rules: IdentityRules,
    options: StageOptions = {},
  ): Promise<IdentityStage> {
    const stage = new IdentityStage(store, rules, options);
    await stage.reload();
    stage.committedOffset = await store.offset();
    return stage;
  }

  /** Rebuilds the in-memory working set from the store (start-up, and after a failed commit). */
  private async reload(): Promise<void> {
    const engine = new IdentityEngine(this.rules, this.options);
    const snap = await this.store.load();
    for (const p of snap.profiles) engine.loadProfile(p);
    for (const m of snap.merges) engine.loadMerge(m);
    for (const b of snap.blocks) engine.loadBlock(b);
    this.engine = engine;
  }

  /** Starts following the feed from the stored offset. */
  follow(feed: EventFeed): void {
    this.subscription = feed.subscribe({
      name: 'identity',
      from: () => this.store.offset(),
      handle: (events, next) => this.handle(events, next),
      flush: () => this.flush(),
      maxBatch: this.options.maxBatch ?? 20_000,
      onError: this.options.onError,
    });
  }

  async drained(): Promise<void> {
    await this.subscription?.drained();
  }

  async stop(): Promise<void> {
    await this.subscription?.stop();
    this.subscription = undefined;
    await this.turns.idle();
    await this.flush().catch(() => undefined);
  }

  /**
   * Resolves a batch and starts the store transaction that commits it with `nextOffset`;
   * returns once the previous batch's transaction has committed, so the store works on one
   * batch while the engine resolves the next (the feed's `flush` contract). If a transaction
   * fails, the working set is reloaded from the store (memory is ahead of it), this call
   * throws, and the feed retries from the stored offset.
   */
  handle(events: readonly StoredEvent[], nextOffset: number | undefined): Promise<void> {
    return this.turns.run(async () => {
      this.throwLost();
      try {
        // Let requests in between: a batch is tens of thousands of events.
        const slice = new Slice();
        for (const event of events) {
          if (slice.due()) await slice.pass();
          this.engine.resolve(toIdentityEvent(event, this.rules));
        }
        const changes = this.engine.takeChanges();
        // The rows are built now, while the previous batch's transaction may still run, so
        // this batch's transaction can start as soon as that one ends and run while the
        // next batch resolves (built later, they would hold the transaction back behind it).
        const write = await this.prepare(changes, nextOffset);
        await this.settle();
        const commit = this.written(write, changes, nextOffset);
        commit.catch(() => undefined); // awaited by the next batch, `flush` or `unmerge`
        this.inflight = commit;
      } catch (err) {
        // The store's connection must be idle before the reload reads through it.
        await this.inflight?.catch(() => undefined);
        this.inflight = undefined;
        await this.reload().catch(() => undefined);
        throw err;
      }
    });
  }

  /** Waits for the last batch's store transaction; throws (after a reload) if it failed. */
  flush(): Promise<void> {
    return this.turns.run(async () => {
      this.throwLost();
      await this.settle();
    });
  }

  private throwLost(): void {
    if (this.lost === undefined) return;
    const err = this.lost;
    this.lost = undefined;
    throw err;
  }

  private async settle(): Promise<void> {
    const commit = this.inflight;
    this.inflight = undefined;
    if (commit === undefined) return;
    try {
      await commit;
    } catch (err) {
      await this.reload().catch(() => undefined);
      throw err;
    }
  }

  /** The store's write of `changes` (the rows are read from the engine now). */
  private prepare(changes: IdentityChanges, next: number | undefined): Promise<() => Promise<void>> {
    return this.store.prepareCommit(changes, (id) => this.engine.profiles.get(id), next);
  }

  /** Runs a prepared write, then records its offset and reports the changes. */
  private async written(
    write: () => Promise<void>,
    changes: IdentityChanges,
    next: number | undefined,
  ): Promise<void> {
    await write();
    if (next !== undefined) this.committedOffset = next;
    this.options.onCommitted?.(changes);
  }

  /** The log offset the stage has resolved and committed up to. */
  position(): number {
    return this.committedOffset;
  }

  /** How many profiles there are. */
  profileCount(): number {
    return this.engine.profiles.size;
  }

  private async commit(nextOffset: number | undefined): Promise<void> {
    try {
      const changes = this.engine.takeChanges();
      await this.written(await this.prepare(changes, nextOffset), changes, nextOffset);
    } catch (err) {
      await this.reload().catch(() => undefined);
      throw err;
    }
  }

  // ---- Profile API ----

  /** The profile holding `type:value` (or `profile_id:<id>`), or undefined. */
  lookup(text: string): Profile | undefined {
    const id = parseIdentifierKey(text);
    if (!id) throw new IdentityLookupError('bad_identifier', `expected type:value, got "${text}"`);
    if (id.type === 'profile_id') {
      const cur = this.engine.current(id.value);
      return cur === undefined ? undefined : this.engine.profiles.get(cur);
    }
    return this.engine.profileOf(this.normalizeKey(id.type, id.value));
  }

  private normalizeKey(type: string, value: string): string {
    const n = normalizeIdentifier(type, value, this.rules);
    return identifierKey(type, n.value);
  }

  async getProfile(text: string, options: { events?: number; now?: number } = {}): Promise<ProfileView> {
    const p = this.lookup(text);
    if (!p) throw new IdentityLookupError('not_found', `no profile holds ${text}`);
    const component = new Set([p.id]);
    for (const old of this.engine.redirects.keys()) if (this.engine.current(old) === p.id) component.add(old);
    const merges = [...this.engine.merges.values()].filter(
      (m) => component.has(m.profileId) || component.has(m.mergedProfileId),
    );
    return profileView(
      p,
      this.rules,
      merges,
      await this.store.recentEvents(p.id, options.events ?? 20),
      options.now ?? Date.now(),
    );
  }

  /** Profiles whose trait equals the value (compared as text), at most `limit`. */
  search(trait: string, value: string, limit = 50): { profileId: string; traits: Record<string, unknown> }[] {
    const out: { profileId: string; traits: Record<string, unknown> }[] = [];
    for (const p of this.engine.profiles.values()) {
      const t = p.traits.get(trait);
      if (t === undefined) continue;
      const text = typeof t.value === 'string' ? t.value : JSON.stringify(t.value);
      if (text !== value) continue;
      out.push({ profileId: p.id, traits: Object.fromEntries([...p.traits].map(([k, v]) => [k, v.value])) });
      if (out.length >= limit) break;
    }
    return out;
  }

  /** Why identifiers are, or are not, one person. */
  async explain(a: string, b?: string): Promise<Explanation> {
    const keys = [a, ...(b === undefined ? [] : [b])].map((text) => {
      const id = parseIdentifierKey(text);
      if (!id) throw new IdentityLookupError('bad_identifier', `expected type:value, got "${text}"`);
      return this.normalizeKey(id.type, id.value);
    });
    const holders = keys.map((k) => this.engine.holders.get(k) ?? null);
    const profileIds = [...new Set(holders.filter((h): h is string => h !== null))];
    const decisions = await this.store.decisions(profileIds, keys, 10_000);
    return explainDecisions(keys, holders, decisions, (k) => this.engine.holders.get(k));
  }

  /** Splits a merge apart (see `IdentityEngine.unmerge`) and commits the result. */
  unmerge(
    mergeId: string,
    options: { keepBlock?: boolean; at?: number } = {},
  ): Promise<{ profiles: string[] }> {
    return this.turns.run(async () => {
      // The replay reads the profile's events from the store: the last batch must be in.
      try {
        await this.settle();
      } catch (err) {
        this.lost = err;
        throw err;
      }
      const merge = this.engine.merges.get(mergeId);
      if (!merge || merge.unmergedAt !== null)
        throw new IdentityLookupError('merge_not_found', `no active merge ${mergeId}`);
      const current = this.engine.current(merge.profileId);
      if (current === undefined)
        throw new IdentityLookupError('merge_not_found', `merge ${mergeId} has no profile`);
      const stored = await this.store.eventsOfProfile(current);
      const result = this.engine.unmerge(
        mergeId,
        stored.map((e) => toIdentityEvent(e, this.rules)),
        { keepBlock: options.keepBlock ?? true, at: options.at ?? Date.now() },
      );
      await this.commit(undefined);
      return result;
    });
  }

  /**
   * Merges pairs of profiles on probabilistic evidence (see `IdentityEngine.mergeMatched`),
   * in order, committed in one transaction between batches.
   */
  mergeMatched(
    pairs: readonly { a: string; b: string; tag: string }[],
    at = Date.now(),
  ): Promise<MatchedMerge[]> {
    return this.turns.run(async () => {
      try {
        await this.settle();
      } catch (err) {
        this.lost = err;
        throw err;
      }
      const out = pairs.map((p) => this.engine.mergeMatched(p.a, p.b, { tag: p.tag, at }));
      if (out.some((o) => o.status === 'merged')) await this.commit(undefined);
      return out;
    });
  }

  /**
   * The identity side of one stored event's path: its identifiers, the decision made for it
   * (new profile, attach, merge, limited), the profile it belongs to now and the merges it
   * caused or that carried it since.
   */
  async traceEvent(stored: StoredEvent): Promise<EventIdentity> {
    let keys: string[] = [];
    try {
      keys = toIdentityEvent(stored, this.rules).identifiers.map((i) => i.key);
    } catch {
      keys = [];
    }
    // Decisions are found by identifier (an indexed path of the port); the event's own is
    // the one at its offset with its messageId.
    const decisions = keys.length > 0 ? await this.store.decisions([], keys, 10_000) : [];
    const decision = decisions.find(
      (d) => d.logOffset === stored.logOffset && d.messageId === stored.messageId,
    );
    const merges = [...this.engine.merges.values()].filter(
      (m) => m.messageId === stored.messageId && m.logOffset === stored.logOffset,
    );
    const resolvedInto = decision?.profileId ?? undefined;
    const profileId = resolvedInto === undefined ? undefined : this.engine.current(resolvedInto);
    const laterMerges: MergeRecord[] = [];
    if (resolvedInto !== undefined) {
      // Follow the profile the event was resolved into through the merges that absorbed it.
      let at = resolvedInto;
      for (let guard = 0; guard < 10_000; guard++) {
        const next = [...this.engine.merges.values()].find(
          (m) => m.mergedProfileId === at && m.unmergedAt === null && m.logOffset >= stored.logOffset,
        );
        if (!next || merges.includes(next)) break;
        laterMerges.push(next);
        at = next.profileId;
      }
    }
    return { identifiers: keys, decision, profileId, merges, laterMerges };
  }

  /**
   * The profiles holding any of `identities` (`type`/`value`, or `profile_id`), every
   * identifier they hold, every profile id merged into or out of them, and the messageIds of
   * their events: what a deletion erases. Reads only.
   */
  findPerson(
    identities: readonly { type: string; value: string }[],
  ): Promise<{ profileIds: string[]; messageIds: string[]; identities: { type: string; value: string }[] }> {
    return this.turns.run(async () => {
      await this.settleOrKeep();
      const live = new Set<string>();
      for (const id of identities) {
        let holder: string | undefined;
        if (id.type === 'profile_id') holder = id.value;
        else {
          try {
            holder = this.engine.holders.get(this.normalizeKey(id.type, id.value));
          } catch {
            holder = undefined;
          }
        }
        const current = holder === undefined ? undefined : (this.engine.current(holder) ?? holder);
        if (current !== undefined) live.add(current);
      }
      const found: { type: string; value: string }[] = [];
      for (const pid of live) {
        for (const key of this.engine.profiles.get(pid)?.identifiers.keys() ?? []) {
          const k = parseIdentifierKey(key);
          if (k) found.push({ type: k.type, value: k.value });
        }
      }
      const { profileIds, messageIds } = await this.store.erasureOf([...live]);
      return { profileIds, messageIds, identities: found };
    });
  }

  /**
   * Deletes the profiles of `target` and everything of them from the store (see
   * `IdentityStore.erase`) between batches, then rebuilds the working set from the store, so
   * nothing of them stays in memory either.
   */
  erase(target: ErasureTarget): Promise<void> {
    return this.turns.run(async () => {
      await this.settleOrKeep();
      await this.store.erase(target);
      await this.reload();
    });
  }

  private async settleOrKeep(): Promise<void> {
    try {
      await this.settle();
    } catch (err) {
      this.lost = err;
      throw err;
    }
  }

  /** The live profile an id names now, following merges. */
  currentProfile(id: string): string | undefined {
    return this.engine.current(id);
  }

  /** For tests and the benchmark: the live profiles. */
  profiles(): IterableIterator<Profile> {
    return this.engine.profiles.values();
  }
}

/** A profile as the Profile API returns it; `merges` are those of its component, any order. */
export function profileView(
  p: Profile,
  rules: IdentityRules,
  merges: readonly MergeRecord[],
  recentEvents: ProfileEvent[],
  now: number,
): ProfileView {
  const computedTraits: Record<string, unknown> = {};
  for (const def of rules.computed)
    computedTraits[def.name] = computedValue(def, p.computed.get(def.name), now);
  return {
    profileId: p.id,
    identifiers: [...p.identifiers.values()].map((i) => ({
      type: i.type,
      value: i.value,
      firstSeen: iso(i.firstSeen),
      sourceId: i.sourceId,
    })),
    traits: Object.fromEntries([...p.traits].map(([k, t]) => [k, t.value])),
    computedTraits,
    firstSeen: iso(p.firstSeen),
    lastSeen: iso(p.lastSeen),
    eventCount: p.eventCount,
    recentEvents,
    merges: [...merges]
      .sort((a, b) => a.logOffset - b.logOffset)
      .map((m) => ({
        ...m,
        timestamp: iso(m.timestamp),
        unmergedAt: m.unmergedAt === null ? null : iso(m.unmergedAt),
      })),
  };
}

/**
 * Why normalised identifier keys are, or are not, one person, from their holders and the
 * decisions of their profiles and identifiers; `holderOf` names the profile holding any key.
 */
export function explainDecisions(
  keys: readonly string[],
  holders: readonly (string | null)[],
  decisions: readonly Decision[],
  holderOf: (key: string) => string | undefined,
): Explanation {
  const refused = decisions.filter(
    (d) =>
      d.leftOut.some((l) => keys.includes(l.identifier)) ||
      (d.limited && keys.some((k) => d.identifiers.includes(k))),
  );
  const identifiers = keys.map((k, i) => ({ identifier: k, profileId: holders[i]! }));
  if (keys.length === 1) {
    const path = decisions.filter((d) => d.accepted.includes(keys[0]!));
    return {
      identifiers,
      sameProfile: true,
      path,
      refused,
      summary:
        holders[0] === null
          ? `${keys[0]} is in no profile${refused.length > 0 ? `: ${refused[0]!.leftOut.find((l) => l.identifier === keys[0])?.reason ?? refused[0]!.rule}` : ''}`
          : `${keys[0]} is in profile ${holders[0]}, first seen in event ${path[0]?.messageId ?? '?'}`,
    };
  }
  const same = holders[0] !== null && holders[0] === holders[1];
  if (!same) {
    // An event of one profile that carried an identifier of the other, refused by a rule.
    const reasons: string[] = [];
    for (const d of decisions) {
      for (const l of d.leftOut) {
        const other = holderOf(l.identifier);
        if (d.profileId === null || other === undefined || other === d.profileId) continue;
        if (!holders.includes(d.profileId) || !holders.includes(other)) continue;
        reasons.push(
          `event ${d.messageId} (profile ${d.profileId}) carried ${l.identifier} of profile ${other}, left out (${l.reason})`,
        );
      }
    }
    return {
      identifiers,
      sameProfile: false,
      path: [],
      refused,
      summary:
        reasons.length > 0 ? `not one person: ${reasons.join('; ')}` : 'not one person: no event links them',
    };
  }
  const path = linkPath(
    decisions.filter((d) => d.profileId !== null),
    keys[0]!,
    keys[1]!,
  );
  return {
    identifiers,
    sameProfile: true,
    path,
    refused,
    summary: `one person (profile ${holders[0]}): linked through ${path.length} event(s): ${path
      .map((d) => `${d.messageId} [${d.accepted.join(', ')}]`)
      .join(' → ')}`,
  };
}

/** The events (by their accepted identifiers) that connect `a` to `b`: a breadth-first search. */
function linkPath(decisions: readonly Decision[], a: string, b: string): Decision[] {
  const byId = new Map<string, Decision[]>();
  for (const d of decisions) for (const k of d.accepted) (byId.get(k) ?? byId.set(k, []).get(k)!).push(d);
  const via = new Map<string, { from: string; decision: Decision } | null>([[a, null]]);
  const queue = [a];
  while (queue.length > 0) {
    const k = queue.shift()!;
    if (k === b) break;
    for (const d of byId.get(k) ?? []) {
      for (const next of d.accepted) {
        if (via.has(next)) continue;
        via.set(next, { from: k, decision: d });
        queue.push(next);
      }
    }
  }
  const path: Decision[] = [];
  let cur = via.get(b);
  while (cur) {
    if (!path.includes(cur.decision)) path.unshift(cur.decision);
    cur = via.get(cur.from);
  }
  return path;
}
