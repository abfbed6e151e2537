import { randomUUID } from 'node:crypto';
import { isPlainObject, type JsonObject } from '../spec/event.js';
import type { StoredEvent } from '../store/store.js';
import { extractIdentifiers, type Identifier, type IdentityRules, type LeftOut } from './identifiers.js';
import {
  addToComputed,
  type ComputedState,
  matchesComputed,
  mergeComputed,
  pickTrait,
  pruneComputed,
  type TraitValue,
} from './traits.js';

/**
 * Longest trait name kept, in UTF-16 code units: a name is part of the identity store's keys,
 * and PostgreSQL refuses an index entry past 2,704 bytes, which would stop resolution of every
 * later event. A longer one is not kept as a trait (the event keeps it).
 */
export const MAX_TRAIT_NAME_LENGTH = 255;

/** An identifier a profile holds. */
export interface HeldIdentifier {
  type: string;
  value: string;
  /** Timestamp of the event that first brought it, epoch ms. */
  firstSeen: number;
  sourceId: string;
  logOffset: number;
}

/** One unified profile, as the in-memory core holds it. */
export interface Profile {
  id: string;
  identifiers: Map<string, HeldIdentifier>;
  traits: Map<string, TraitValue>;
  computed: Map<string, ComputedState>;
  firstSeen: number;
  lastSeen: number;
  eventCount: number;
  /** Log offset of the event that created it (the older profile survives a merge). */
  createdOffset: number;
}

export type DecisionAction = 'new' | 'attach' | 'merge' | 'none';

/** Why an event went where it went. One per resolved event. */
export interface Decision {
  logOffset: number;
  messageId: string;
  sourceId: string;
  timestamp: number;
  action: DecisionAction;
  /** Some identifiers were left out by a limit or a blocked link. */
  limited: boolean;
  profileId: string | null;
  /** Profiles that held the event's identifiers before it. */
  involved: string[];
  identifiers: string[];
  accepted: string[];
  leftOut: LeftOut[];
  rule: string;
}

export interface MergeRecord {
  mergeId: string;
  /** The surviving profile. */
  profileId: string;
  mergedProfileId: string;
  logOffset: number;
  messageId: string;
  timestamp: number;
  survivorIdentifiers: string[];
  mergedIdentifiers: string[];
  unmergedAt: number | null;
  blockId: string | null;
}

/** What `IdentityEngine.mergeMatched` did. */
export type MatchedMerge =
  | { status: 'merged'; profileId: string; mergeId: string }
  | { status: 'same'; profileId: string }
  | { status: 'refused'; reason: string };

/** A link that may not be made again: no profile holding one side merges with one holding the other. */
export interface Block {
  blockId: string;
  mergeId: string;
  sideA: string[];
  sideB: string[];
  createdAt: number;
}

/** Which parts of a changed profile to rewrite. */
export const Dirty = { row: 1, identifiers: 2, traits: 4, computed: 8, all: 15 } as const;

/** What a batch changed, for the store to write in one transaction. */
export interface IdentityChanges {
  /** Profiles whose rows are rewritten (present in the engine), with which parts (`Dirty` bits). */
  dirty: Map<string, number>;
  /** Profiles whose rows are deleted. */
  removed: Set<string>;
  assignments: { logOffset: number; messageId: string; profileId: string }[];
  /** Earlier event → profile rows to repoint: old profile id → its current one. */
  remap: Map<string, string>;
  decisions: Decision[];
  merges: MergeRecord[];
  /** Merge records rewritten (unmerged) or deleted (replaced by a replay). */
  unmerged: MergeRecord[];
  deletedMerges: string[];
  blocks: Block[];
  /** Log offsets whose assignments and decisions are replaced (a replay). */
  replacedOffsets: number[];
  /** Profiles whose events were all reassigned by a replay: aliases to and from them go. */
  unaliased: string[];
}

/** An event as resolution needs it: parsed once, identifiers extracted. */
export interface IdentityEvent {
  logOffset: number;
  messageId: string;
  sourceId: string;
  timestamp: number;
  event: JsonObject;
  identifiers: Identifier[];
  leftOut: LeftOut[];
}

export function toIdentityEvent(stored: StoredEvent, rules: IdentityRules): IdentityEvent {
  const event = JSON.parse(stored.json) as JsonObject;
  const ts = typeof event.timestamp === 'string' ? Date.parse(event.timestamp) : Number.NaN;
  const { identifiers, leftOut } = extractIdentifiers(event, stored.sourceId, rules);
  return {
    logOffset: stored.logOffset,
    messageId: stored.messageId,
    sourceId: stored.sourceId,
    timestamp: Number.isFinite(ts) ? ts : stored.receivedAt,
    event,
    identifiers,
    leftOut,
  };
}

export interface IdentityEngineOptions {
  newId?: () => string;
  now?: () => number;
  /** Identifiers held outside this engine (a replay): they are left out, never taken. */
  foreign?: (key: string) => boolean;
}

function emptyChanges(): IdentityChanges {
  return {
    dirty: new Map(),
    removed: new Set(),
    assignments: [],
    remap: new Map(),
    decisions: [],
    merges: [],
    unmerged: [],
    deletedMerges: [],
    blocks: [],
    replacedOffsets: [],
    unaliased: [],
  };
}

/**
 * The in-memory core of identity resolution. For each event it finds the profiles that hold
 * its identifiers and decides: none → a new profile; one → attach the new identifiers; several
 * → merge them. Before acting it checks the limits (count per identifier type, optionally
 * within a window) and the blocked links; while the outcome would break one, it leaves out
 * the lowest-priority identifier involved and decides again. Every decision is recorded.
 * No I/O: the stage persists `takeChanges()` after each batch.
 */
export class IdentityEngine {
  readonly profiles = new Map<string, Profile>();
  /** Identifier key → id of the profile holding it. */
  readonly holders = new Map<string, string>();
  /** Profile ids merged away → the profile they went into (not compressed). */
  readonly redirects = new Map<string, string>();
  readonly merges = new Map<string, MergeRecord>();
  readonly blocks = new Map<string, Block>();
  /** Identifier key → the blocks naming it, and on which side. */
  private readonly blockIndex = new Map<string, { blockId: string; side: 0 | 1 }[]>();
  private changes = emptyChanges();
  private readonly newId: () => string;
  private readonly now: () => number;
  private readonly foreign: ((key: string) => boolean) | undefined;

  constructor(
    readonly rules: IdentityRules,
    options: IdentityEngineOptions = {},
  ) {
    this.newId = options.newId ?? (() => randomUUID());
    this.now = options.now ?? Date.now;
    this.foreign = options.foreign;
  }

  /** The changes since the last call, for the store. */
  takeChanges(): IdentityChanges {
    const c = this.changes;
    this.changes = emptyChanges();
    for (const old of c.remap.keys()) c.remap.set(old, this.current(old) ?? old);
    return c;
  }

  /** The live profile an id names now, following merges. */
  current(id: string): string | undefined {
    let cur = id;
    for (let i = 0; i < 10_000; i++) {
      if (this.profiles.has(cur)) return cur;
      const next = this.redirects.get(cur);
      if (next === undefined) return undefined;
      cur = next;
    }
    return undefined;
  }

  profileOf(key: string): Profile | undefined {
    const id = this.holders.get(key);
    return id === undefined ? undefined : this.profiles.get(id);
  }

  // ---- loading (from the store) ----

  loadProfile(p: Profile): void {
    this.profiles.set(p.id, p);
    for (const key of p.identifiers.keys()) this.holders.set(key, p.id);
  }

  loadMerge(m: MergeRecord): void {
    this.merges.set(m.mergeId, m);
    if (m.unmergedAt === null) this.redirects.set(m.mergedProfileId, m.profileId);
  }

  loadBlock(b: Block): void {
    this.blocks.set(b.blockId, b);
    for (const k of b.sideA) this.indexBlock(k, b.blockId, 0);
    for (const k of b.sideB) this.indexBlock(k, b.blockId, 1);
  }

  private indexBlock(key: string, blockId: string, side: 0 | 1) {
    const list = this.blockIndex.get(key);
    if (list) list.push({ blockId, side });
    else this.blockIndex.set(key, [{ blockId, side }]);
  }

  // ---- resolution ----

  /** Resolves one event; returns the decision (also kept for the store). */
  resolve(ev: IdentityEvent): Decision {
    const identifiers: string[] = [];
    for (const id of ev.identifiers) identifiers.push(id.key);
    for (const l of ev.leftOut) identifiers.push(l.identifier);
    // The event is ours: its lists are reused rather than copied (this runs once per event).
    const leftOut = ev.leftOut;
    let cand = ev.identifiers;
    if (this.foreign) {
      cand = [];
      for (const id of ev.identifiers) {
        if (this.foreign(id.key)) leftOut.push({ identifier: id.key, reason: 'held_by_other_profile' });
        else cand.push(id);
      }
    }
    let limited = false;
    let reasons: string | undefined;
    let hits: string[];
    for (;;) {
      hits = this.hitsOf(cand);
      const violation = this.violation(cand, hits, ev.timestamp);
      if (!violation) break;
      const drop = this.pickDrop(cand, violation);
      limited = true;
      leftOut.push({ identifier: drop.key, reason: violation.reason });
      reasons = `${reasons === undefined ? '' : `${reasons}; `}${violation.reason} would be broken: ${drop.key} left out`;
      cand = cand.filter((c) => c !== drop);
    }
    const accepted = cand.length === identifiers.length ? identifiers : cand.map((c) => c.key);
    if (cand.length === 0) {
      const d: Decision = {
        logOffset: ev.logOffset,
        messageId: ev.messageId,
        sourceId: ev.sourceId,
        timestamp: ev.timestamp,
        action: 'none',
        limited,
        profileId: null,
        involved: hits,
        identifiers,
        accepted,
        leftOut,
        rule: 'no usable identifier: the event belongs to no profile',
      };
      this.changes.decisions.push(d);
      return d;
    }
    let profile: Profile;
    let action: DecisionAction;
    let rule: string;
    if (hits.length === 0) {
      profile = this.createProfile(ev);
      action = 'new';
      rule = 'no profile holds these identifiers: new profile';
    } else if (hits.length === 1) {
      profile = this.profiles.get(hits[0]!)!;
      action = 'attach';
      let added = '';
      for (const c of cand) if (!this.holders.has(c.key)) added += added === '' ? c.key : `, ${c.key}`;
      rule = added === '' ? 'one profile holds them' : `one profile holds them: attached ${added}`;
    } else {
      profile = this.mergeProfiles(hits, ev);
      action = 'merge';
      rule = `${hits.length} profiles hold these identifiers: merged within the limits`;
    }
    if (reasons !== undefined) rule += `; ${reasons}`;
    let bits: number = action === 'attach' ? Dirty.row : Dirty.all;
    for (const c of cand) {
      if (this.holders.has(c.key)) continue;
      bits |= Dirty.identifiers;
      profile.identifiers.set(c.key, {
        type: c.type,
        value: c.value,
        firstSeen: ev.timestamp,
        sourceId: ev.sourceId,
        logOffset: ev.logOffset,
      });
      this.holders.set(c.key, profile.id);
    }
    bits |= this.applyEvent(profile, ev);
    this.markDirty(profile.id, bits);
    this.changes.assignments.push({
      logOffset: ev.logOffset,
      messageId: ev.messageId,
      profileId: profile.id,
    });
    const d: Decision = {
      logOffset: ev.logOffset,
      messageId: ev.messageId,
      sourceId: ev.sourceId,
      timestamp: ev.timestamp,
      action,
      limited,
      profileId: profile.id,
      involved: hits,
      identifiers,
      accepted,
      leftOut,
      rule,
    };
    this.changes.decisions.push(d);
    return d;
  }

  private hitsOf(cand: readonly Identifier[]): string[] {
    const hits: string[] = [];
    for (const c of cand) {
      const h = this.holders.get(c.key);
      if (h !== undefined && !hits.includes(h)) hits.push(h);
    }
    return hits;
  }

  /** The first limit or block the outcome would break, if any. */
  private violation(
    cand: readonly Identifier[],
    hits: readonly string[],
    ts: number,
  ): { reason: string; type?: string; blocked?: [string, string] } | undefined {
    // With at most one profile involved, only the types of new identifiers can go over a limit.
    if (hits.length <= 1 && cand.every((c) => this.holders.has(c.key))) return undefined;
    const types = new Set<string>();
    for (const c of cand) if (hits.length > 1 || !this.holders.has(c.key)) types.add(c.type);
    if (hits.length > 1)
      for (const h of hits) for (const i of this.profiles.get(h)!.identifiers.values()) types.add(i.type);
    for (const type of types) {
      const limit = this.rules.limit(type);
      const within = this.rules.within(type);
      const since = within === undefined ? -Infinity : ts - within;
      let count = 0;
      let most = 0;
      for (const h of hits) {
        let own = 0;
        for (const i of this.profiles.get(h)!.identifiers.values())
          if (i.type === type && i.firstSeen >= since) own++;
        count += own;
        most = Math.max(most, own);
      }
      for (const c of cand) if (c.type === type && !this.holders.has(c.key)) count++;
      // A profile already over a limit (the limit was lowered) is not a new violation.
      if (count > limit && count > most) return { reason: `limit:${type}`, type };
    }
    if (hits.length > 1 && this.blockIndex.size > 0) {
      for (let i = 0; i < hits.length; i++)
        for (let j = i + 1; j < hits.length; j++) {
          const b = this.blockBetween(hits[i]!, hits[j]!);
          if (b) return { reason: `blocked_link:${b}`, blocked: [hits[i]!, hits[j]!] };
        }
    }
    return undefined;
  }

  private blockSides(profileId: string): Map<string, Set<0 | 1>> {
    const sides = new Map<string, Set<0 | 1>>();
    for (const key of this.profiles.get(profileId)!.identifiers.keys()) {
      for (const { blockId, side } of this.blockIndex.get(key) ?? []) {
        const s = sides.get(blockId) ?? new Set<0 | 1>();
        sides.set(blockId, s);
        s.add(side);
      }
    }
    return sides;
  }

  private blockBetween(a: string, b: string): string | undefined {
    const sa = this.blockSides(a);
    if (sa.size === 0) return undefined;
    const sb = this.blockSides(b);
    for (const [blockId, sidesA] of sa) {
      const sidesB = sb.get(blockId);
      if (!sidesB) continue;
      if ((sidesA.has(0) && sidesB.has(1)) || (sidesA.has(1) && sidesB.has(0))) return blockId;
    }
    return undefined;
  }

  /**
   * The identifier to leave out: among those involved in the violation (new ones of the
   * type over its limit, and those held by the profiles that would merge), the lowest
   * priority; on a tie, one not on the profile of the highest-priority identifier, then the
   * later one in the event.
   */
  private pickDrop(
    cand: readonly Identifier[],
    v: { type?: string; blocked?: [string, string] },
  ): Identifier {
    let involved = v.blocked
      ? cand.filter((c) => {
          const h = this.holders.get(c.key);
          return h === v.blocked![0] || h === v.blocked![1];
        })
      : cand.filter((c) => this.holders.has(c.key) || c.type === v.type);
    if (involved.length === 0) involved = [...cand];
    const top = [...cand].sort((a, b) => this.rules.priority(a.type) - this.rules.priority(b.type))[0]!;
    const anchor = this.holders.get(top.key);
    let best = involved[0]!;
    let bestScore: [number, number, number] = [-1, -1, -1];
    involved.forEach((c) => {
      const score: [number, number, number] = [
        this.rules.priority(c.type),
        anchor !== undefined && this.holders.get(c.key) !== anchor ? 1 : 0,
        cand.indexOf(c),
      ];
      if (
        score[0] > bestScore[0] ||
        (score[0] === bestScore[0] &&
          (score[1] > bestScore[1] || (score[1] === bestScore[1] && score[2] > bestScore[2])))
      ) {
        best = c;
        bestScore = score;
      }
    });
    return best;
  }

  private createProfile(ev: IdentityEvent): Profile {
    const p: Profile = {
      id: this.newId(),
      identifiers: new Map(),
      traits: new Map(),
      computed: new Map(),
      firstSeen: ev.timestamp,
      lastSeen: ev.timestamp,
      eventCount: 0,
      createdOffset: ev.logOffset,
    };
    this.profiles.set(p.id, p);
    return p;
  }

  /**
   * Merges two profiles on evidence from outside the events (probabilistic matching), as a
   * merge like any other (recorded, undone by `unmerge`), with `tag` in place of the merging
   * event's message id. Refused when it would break a limit or a blocked link, as an event's
   * merge would be; nothing changes then.
   */
  mergeMatched(a: string, b: string, options: { tag: string; at: number }): MatchedMerge {
    const ca = this.current(a);
    const cb = this.current(b);
    if (ca === undefined || cb === undefined)
      return { status: 'refused', reason: `profile ${ca === undefined ? a : b} no longer exists` };
    if (ca === cb) return { status: 'same', profileId: ca };
    const v = this.violation([], [ca, cb], options.at);
    if (v) return { status: 'refused', reason: `${v.reason} would be broken` };
    const offset = Math.max(this.profiles.get(ca)!.createdOffset, this.profiles.get(cb)!.createdOffset);
    const before = this.changes.merges.length;
    const survivor = this.mergeProfiles([ca, cb], {
      logOffset: offset,
      messageId: options.tag,
      timestamp: options.at,
    });
    this.markDirty(survivor.id, Dirty.all);
    return { status: 'merged', profileId: survivor.id, mergeId: this.changes.merges[before]!.mergeId };
  }

  /** Merges the profiles into the oldest; records one merge per absorbed profile. */
  private mergeProfiles(
    ids: readonly string[],
    ev: Pick<IdentityEvent, 'logOffset' | 'messageId' | 'timestamp'>,
  ): Profile {
    const ps = ids.map((id) => this.profiles.get(id)!).sort((a, b) => a.createdOffset - b.createdOffset);
    const survivor = ps[0]!;
    for (const other of ps.slice(1)) {
      const record: MergeRecord = {
        mergeId: this.newId(),
        profileId: survivor.id,
        mergedProfileId: other.id,
        logOffset: ev.logOffset,
        messageId: ev.messageId,
        timestamp: ev.timestamp,
        survivorIdentifiers: [...survivor.identifiers.keys()],
        mergedIdentifiers: [...other.identifiers.keys()],
        unmergedAt: null,
        blockId: null,
      };
      this.absorb(survivor, other);
      this.merges.set(record.mergeId, record);
      this.changes.merges.push(record);
    }
    return survivor;
  }

  private absorb(into: Profile, from: Profile): void {
    for (const [key, held] of from.identifiers) {
      const mine = into.identifiers.get(key);
      if (!mine || held.firstSeen < mine.firstSeen) into.identifiers.set(key, held);
      this.holders.set(key, into.id);
    }
    for (const [name, t] of from.traits) {
      const mine = into.traits.get(name);
      into.traits.set(name, mine ? pickTrait(mine, t, this.rules.traitRule(name), this.rules.sourceRank) : t);
    }
    for (const [name, state] of from.computed) {
      const mine = into.computed.get(name);
      if (mine) mergeComputed(mine, state);
      else into.computed.set(name, state);
    }
    into.firstSeen = Math.min(into.firstSeen, from.firstSeen);
    into.lastSeen = Math.max(into.lastSeen, from.lastSeen);
    into.eventCount += from.eventCount;
    this.profiles.delete(from.id);
    this.redirects.set(from.id, into.id);
    this.changes.removed.add(from.id);
    this.changes.dirty.delete(from.id);
    this.changes.remap.set(from.id, into.id);
  }

  private markDirty(id: string, bits: number): void {
    this.changes.dirty.set(id, (this.changes.dirty.get(id) ?? 0) | bits);
  }

  /** Applies the event's traits and computed traits; returns the `Dirty` bits it changed. */
  private applyEvent(p: Profile, ev: IdentityEvent): number {
    let bits = 0;
    p.eventCount++;
    p.firstSeen = Math.min(p.firstSeen, ev.timestamp);
    p.lastSeen = Math.max(p.lastSeen, ev.timestamp);
    const e = ev.event;
    const traits =
      e.type === 'identify' && isPlainObject(e.traits)
        ? e.traits
        : isPlainObject(e.context) && isPlainObject(e.context.traits)
          ? e.context.traits
          : undefined;
    if (traits) {
      for (const [name, value] of Object.entries(traits)) {
        // A trait's name is a key of the identity store's indexes (see MAX_TRAIT_NAME_LENGTH).
        if (value === undefined || name.length > MAX_TRAIT_NAME_LENGTH) continue;
        bits |= Dirty.traits;
        const next: TraitValue = {
          value,
          timestamp: ev.timestamp,
          sourceId: ev.sourceId,
          logOffset: ev.logOffset,
        };
        const mine = p.traits.get(name);
        p.traits.set(
          name,
          mine ? pickTrait(mine, next, this.rules.traitRule(name), this.rules.sourceRank) : next,
        );
      }
    }
    for (const def of this.rules.computed) {
      if (!matchesComputed(def, e)) continue;
      const state = p.computed.get(def.name) ?? new Map();
      p.computed.set(def.name, state);
      addToComputed(state, def, e, ev.timestamp);
      pruneComputed(def, state, this.now());
      bits |= Dirty.computed;
    }
    return bits;
  }

  // ---- unmerge ----

  /**
   * Splits a merge apart: replays the events of the profile the merge now lives in, in log
   * order, with a block between the two sides, so identifiers, traits, computed traits and
   * events go back where they would have been without the link. The block is kept (later
   * events cannot re-merge the sides) unless `keepBlock` is false.
   */
  unmerge(
    mergeId: string,
    events: readonly IdentityEvent[],
    options: { keepBlock: boolean; at: number },
  ): { profiles: string[] } {
    const merge = this.merges.get(mergeId);
    if (!merge || merge.unmergedAt !== null) throw new Error(`merge ${mergeId} is not active`);
    const currentId = this.current(merge.profileId);
    if (currentId === undefined) throw new Error(`profile ${merge.profileId} no longer exists`);
    const current = this.profiles.get(currentId)!;
    const component = new Set<string>([currentId]);
    for (const old of this.redirects.keys()) if (this.current(old) === currentId) component.add(old);

    const block: Block = {
      blockId: this.newId(),
      mergeId,
      sideA: merge.survivorIdentifiers,
      sideB: merge.mergedIdentifiers,
      createdAt: options.at,
    };
    const sub = new IdentityEngine(this.rules, {
      newId: this.newId,
      now: this.now,
      foreign: (key) => {
        const h = this.holders.get(key);
        return h !== undefined && h !== currentId;
      },
    });
    for (const b of this.blocks.values()) sub.loadBlock(b);
    sub.loadBlock(block);
    for (const ev of events) sub.resolve(ev);
    const replay = sub.takeChanges();

    // Name the pieces: the absorbed side gets its old id back, the survivor side keeps the current id.
    const rename = new Map<string, string>();
    const named = (target: string, side: readonly string[]) => {
      for (const p of sub.profiles.values()) {
        if (!rename.has(p.id) && side.some((k) => p.identifiers.has(k))) return rename.set(p.id, target);
      }
    };
    named(merge.mergedProfileId, merge.mergedIdentifiers);
    named(currentId, merge.survivorIdentifiers);
    const name = (id: string) => rename.get(id) ?? id;

    // Replace the component's state with the pieces.
    for (const key of current.identifiers.keys()) this.holders.delete(key);
    this.profiles.delete(currentId);
    for (const id of component) this.redirects.delete(id);
    this.changes.removed.add(currentId);
    for (const m of this.merges.values()) {
      if (m.mergeId !== mergeId && m.unmergedAt === null && component.has(m.profileId)) {
        this.merges.delete(m.mergeId);
        this.changes.deletedMerges.push(m.mergeId);
      }
    }
    const pieces: string[] = [];
    for (const p of sub.profiles.values()) {
      p.id = name(p.id);
      this.loadProfile(p);
      this.changes.removed.delete(p.id);
      this.markDirty(p.id, Dirty.all);
      pieces.push(p.id);
    }
    for (const m of sub.merges.values()) {
      const renamed = { ...m, profileId: name(m.profileId), mergedProfileId: name(m.mergedProfileId) };
      this.loadMerge(renamed);
      this.changes.merges.push(renamed);
    }
    merge.unmergedAt = options.at;
    if (options.keepBlock) {
      merge.blockId = block.blockId;
      this.loadBlock(block);
      this.changes.blocks.push(block);
    }
    this.changes.unmerged.push(merge);
    // Assigned to the piece each event's profile ended in (profiles merged within the replay are gone).
    for (const a of replay.assignments)
      this.changes.assignments.push({ ...a, profileId: name(sub.current(a.profileId) ?? a.profileId) });
    this.changes.unaliased.push(...component);
    for (const d of replay.decisions) {
      this.changes.decisions.push({
        ...d,
        profileId: d.profileId === null ? null : name(d.profileId),
        involved: d.involved.map(name),
        rule: `${d.rule} (replayed by unmerge ${mergeId})`,
      });
    }
    this.changes.replacedOffsets.push(...events.map((e) => e.logOffset));
    return { profiles: pieces };
  }
}
