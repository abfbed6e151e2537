import type { ComputedTrait } from '../config/identity-schema.js';
import { Dirty, type HeldIdentifier, type Profile } from './identity-engine.js';
import { computedToJson, computedValue, type TraitValue } from './traits.js';

/** What a store writes of one changed profile, read from memory before its transaction starts. */
export interface ProfileRows {
  id: string;
  /** Whether the `profiles` row is rewritten; the lists are empty when their part is unchanged. */
  row: boolean;
  firstSeen: number;
  lastSeen: number;
  eventCount: number;
  createdOffset: number;
  identifiers: HeldIdentifier[];
  traits: [string, TraitValue][];
  computed: [name: string, value: string, state: string][];
}

/**
 * The rows of every dirty profile, as they are now: a store calls this before its first await,
 * so the stage may go on changing profiles while the transaction runs. Held identifiers and
 * trait values are replaced, never changed in place, so copying the lists is enough.
 */
export function snapshotProfiles(
  dirty: ReadonlyMap<string, number>,
  profile: (id: string) => Profile | undefined,
  computedTraits: readonly ComputedTrait[],
  now: number,
): ProfileRows[] {
  const rows: ProfileRows[] = [];
  for (const [id, bits] of dirty) {
    const p = profile(id);
    if (!p) continue;
    const computed: [string, string, string][] = [];
    if (bits & Dirty.computed) {
      for (const def of computedTraits) {
        const state = p.computed.get(def.name);
        if (state)
          computed.push([
            def.name,
            JSON.stringify(computedValue(def, state, now) ?? null),
            computedToJson(state),
          ]);
      }
    }
    rows.push({
      id: p.id,
      row: (bits & Dirty.row) !== 0,
      firstSeen: p.firstSeen,
      lastSeen: p.lastSeen,
      eventCount: p.eventCount,
      createdOffset: p.createdOffset,
      identifiers: bits & Dirty.identifiers ? [...p.identifiers.values()] : [],
      traits: bits & Dirty.traits ? [...p.traits] : [],
      computed,
    });
  }
  return rows;
}
