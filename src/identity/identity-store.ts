import type { ErasureTarget } from '../governance/privacy/erasure.js';
import type { StoredEvent } from '../store/store.js';
import type { Block, Decision, IdentityChanges, MergeRecord, Profile } from './identity-engine.js';

/** Everything the in-memory core needs at start-up. */
export interface IdentitySnapshot {
  profiles: Profile[];
  merges: MergeRecord[];
  blocks: Block[];
}

/** One stored event of a profile, for the Profile API. */
export interface ProfileEvent {
  logOffset: number;
  messageId: string;
  sourceId: string;
  type: string;
  event: string | null;
  timestamp: string;
}

/**
 * The identity store port: profiles, identifiers, traits, merges, blocks, decisions and the
 * event → profile mapping, with the stage's feed offset written in the same transaction.
 * Adapters: DuckDB (embedded default, `./duckdb/`); PostgreSQL comes with the scale-out issue.
 */
export interface IdentityStore {
  /** The log offset the identity stage has resolved up to (0 when it never ran). */
  offset(): Promise<number>;
  load(): Promise<IdentitySnapshot>;
  /**
   * Builds the rows of what a batch changed and returns their write: one transaction with
   * them and, when given, the stage's next offset. `profile(id)` gives the current state of
   * each dirty profile; the store reads it before its first await, so the caller may go on
   * changing profiles once this returns, also while the write runs. Building may let the event
   * loop in. It may run while an earlier write runs; the caller starts a write only once the
   * earlier one has ended.
   */
  prepareCommit(
    changes: IdentityChanges,
    profile: (id: string) => Profile | undefined,
    nextOffset: number | undefined,
  ): Promise<() => Promise<void>>;
  /** The stored events now mapped to the profile, in log order (for an unmerge replay). */
  eventsOfProfile(profileId: string): Promise<StoredEvent[]>;
  recentEvents(profileId: string, limit: number): Promise<ProfileEvent[]>;
  /** Decisions of events mapped to these profiles or naming these identifiers, in log order. */
  decisions(
    profileIds: readonly string[],
    identifiers: readonly string[],
    limit: number,
  ): Promise<Decision[]>;
  /**
   * Every profile id that is or was one of `profileIds` (merged into them, or they into it:
   * aliases and merges) and the messageIds of the events assigned to them: what a deletion
   * erases besides the identifiers.
   */
  erasureOf(profileIds: readonly string[]): Promise<{ profileIds: string[]; messageIds: string[] }>;
  /**
   * Deletes the profiles of `target.profileIds` and everything of them: identifiers, traits,
   * computed traits, merges, blocks, event assignments, aliases, decisions, match pairs; also
   * identifiers and decisions holding one of `target.values`. Leaves none of their bytes in the
   * engine (see `Store.erase`). The caller reloads its working set afterwards.
   */
  erase(target: ErasureTarget): Promise<void>;
  close(): Promise<void>;
}
