/**
 * What a deletion (a regulation) erases: the person's identifiers as asked, widened through
 * the identity graph to every identifier and profile of theirs, and the events that were
 * theirs. Each store deletes what matches; none needs the identity graph itself.
 */
export interface Identity {
  /** Identifier type as identity resolution names it: `user_id`, `anonymous_id`, `email`, `phone`, … */
  type: string;
  value: string;
}

export interface ErasureTarget {
  /** Values of `userId` to erase (events, Segment tables' `user_id`, `users.id`). */
  userIds: string[];
  /** Values of `anonymousId` to erase. */
  anonymousIds: string[];
  /** messageIds of the person's events (found through the identity graph's event assignments). */
  messageIds: string[];
  /** Profiles to erase from the identity store. */
  profileIds: string[];
  /**
   * Values searched for inside free text (JSON payloads, objects rows, log records): every
   * identifier value at least {@link MIN_SEARCHED_LENGTH} characters long, emails lowercased
   * and as given. A shorter value would match other people's data.
   */
  values: string[];
  /** Every identifier of the person, after widening. */
  identities: Identity[];
}

/** Identifier values shorter than this are matched only as whole fields, never inside text. */
export const MIN_SEARCHED_LENGTH = 6;

/** Most identities one deletion request may name (as Segment's regulations take). */
export const MAX_IDENTITIES_PER_REQUEST = 5_000;

/**
 * Parses `type:value` (`user_id:u1`, `email:ada@example.com`). The type is lowercased and
 * `userId`/`anonymousId` are taken as `user_id`/`anonymous_id`.
 * @returns undefined when there is no `:` or either side is empty.
 */
export function parseIdentity(text: string): Identity | undefined {
  const at = text.indexOf(':');
  if (at <= 0 || at === text.length - 1) return undefined;
  const type = normalType(text.slice(0, at).trim());
  const value = text.slice(at + 1).trim();
  if (type === '' || value === '') return undefined;
  return { type, value };
}

export function normalType(type: string): string {
  const t = type.toLowerCase().replace(/[\s-]/g, '_');
  if (t === 'userid') return 'user_id';
  if (t === 'anonymousid') return 'anonymous_id';
  return t;
}

/**
 * The target for `identities` alone (before or without the identity graph): user and
 * anonymous ids become field matches, every long enough value a text match.
 */
export function targetOf(identities: readonly Identity[], extra: Partial<ErasureTarget> = {}): ErasureTarget {
  const t: ErasureTarget = {
    userIds: [...(extra.userIds ?? [])],
    anonymousIds: [...(extra.anonymousIds ?? [])],
    messageIds: [...(extra.messageIds ?? [])],
    profileIds: [...(extra.profileIds ?? [])],
    values: [...(extra.values ?? [])],
    identities: [...(extra.identities ?? [])],
  };
  for (const id of identities) {
    t.identities.push(id);
    if (id.type === 'user_id') t.userIds.push(id.value);
    else if (id.type === 'anonymous_id') t.anonymousIds.push(id.value);
    else if (id.type === 'profile_id') t.profileIds.push(id.value);
    for (const v of searchedForms(id)) t.values.push(v);
  }
  return dedupeTarget(t);
}

/** The forms of an identifier searched inside text: as given, and lowercased for emails. */
function searchedForms(id: Identity): string[] {
  const out: string[] = [];
  // A hashed identifier (`sha256:…`) is stored as its digest.
  const raw = id.value.startsWith('sha256:') ? id.value.slice(7) : id.value;
  if (raw.length >= MIN_SEARCHED_LENGTH) out.push(raw);
  if (id.type === 'email' && raw.toLowerCase() !== raw && raw.length >= MIN_SEARCHED_LENGTH)
    out.push(raw.toLowerCase());
  return out;
}

export function dedupeTarget(t: ErasureTarget): ErasureTarget {
  const u = (a: string[]) => [...new Set(a)];
  const seen = new Set<string>();
  return {
    userIds: u(t.userIds),
    anonymousIds: u(t.anonymousIds),
    messageIds: u(t.messageIds),
    profileIds: u(t.profileIds),
    values: u(t.values),
    identities: t.identities.filter((i) => {
      const k = `${i.type}:${i.value}`;
      if (seen.has(k)) return false;
      seen.add(k);
      return true;
    }),
  };
}

/** Whether the target names nothing at all. */
export function isEmptyTarget(t: ErasureTarget): boolean {
  return (
    t.userIds.length + t.anonymousIds.length + t.messageIds.length + t.profileIds.length + t.values.length ===
    0
  );
}
