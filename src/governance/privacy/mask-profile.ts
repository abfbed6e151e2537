import { createHash } from 'node:crypto';
import type { ProfileView } from '../../identity/identity-stage.js';
import { isPersonalColumnName } from '../../pipeline/privacy/pii-classifier.js';

/**
 * Masks a value as the masked SQL views do (`src/store/duckdb/duckdb-masked-views.ts`):
 * `masked:` and 24 hex characters of `sha256(salt || value)`, so a profile's masked email is the
 * masked `email` column of the warehouse's tables.
 */
export function maskValue(salt: string, value: unknown): string | null {
  if (value === null || value === undefined) return null;
  const text = typeof value === 'string' ? value : JSON.stringify(value);
  return `masked:${createHash('sha256')
    .update(salt + text)
    .digest('hex')
    .slice(0, 24)}`;
}

/** Whether a trait is personal: by its name (`isPersonalColumnName`) or named in `personal`. */
export function isPersonalTrait(name: string, personal: ReadonlySet<string>): boolean {
  return isPersonalColumnName(name) || personal.has(name.toLowerCase());
}

/**
 * A profile as an analyst or viewer may read it: identifier values masked, personal traits
 * masked, the identifiers in its merges masked; counts, times, events and other traits kept.
 */
export function maskProfileView(view: ProfileView, salt: string, personal: ReadonlySet<string>): ProfileView {
  const maskKey = (key: string) => {
    const at = key.indexOf(':');
    return at < 0 ? maskValue(salt, key)! : `${key.slice(0, at)}:${maskValue(salt, key.slice(at + 1))}`;
  };
  const traits = (t: Record<string, unknown>) =>
    Object.fromEntries(
      Object.entries(t).map(([k, v]) => [k, isPersonalTrait(k, personal) ? maskValue(salt, v) : v]),
    );
  return {
    ...view,
    identifiers: view.identifiers.map((i) => ({ ...i, value: maskValue(salt, i.value)! })),
    traits: traits(view.traits),
    computedTraits: traits(view.computedTraits),
    merges: view.merges.map((m) => ({
      ...m,
      survivorIdentifiers: m.survivorIdentifiers.map(maskKey),
      mergedIdentifiers: m.mergedIdentifiers.map(maskKey),
    })),
  };
}
