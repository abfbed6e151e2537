/**
 * The configuration as a versioned document: the YAML text people keep in git, with its
 * `${ENV}` references unresolved, edited entry by entry (sources, destinations, a source's
 * tracking plans, a source's or destination's functions), validated as the file is, compared
 * and redacted. Pure: no file, no environment, no store (the server passes the environment in).
 */
import { createHash } from 'node:crypto';
import { dequal } from 'dequal';
import { structuredPatch } from 'diff';
import { apply as mergePatch } from 'json-merge-patch';
import { type Document, isSeq, parseDocument, stringify } from 'yaml';
import { DEFAULT_DESTINATIONS } from './destinations-schema.js';
import { formatPath, SECRET_KEY, substitute } from './load.js';
import { TributaryConfig } from './schema.js';

/** One problem of a configuration, at its key path (`sources[0].writeKey`). */
export interface ConfigIssue {
  path: string;
  message: string;
}

export type ValidatedConfig =
  | { ok: true; config: TributaryConfig; raw: Record<string, unknown> }
  | { ok: false; issues: ConfigIssue[] };

/** The lists of entries the admin API edits, each entry named by its `id`. */
export type EntryKind = 'sources' | 'destinations';

/**
 * A change of one entry. `plans` and `functions` are inside an entry: a source's tracking
 * plans (inline plans named by `name`), a source's or destination's `transformations` (by `id`).
 */
export type ConfigEdit =
  | { op: 'put' | 'patch'; target: EntryTarget; body: unknown }
  | { op: 'delete'; target: EntryTarget };

export type EntryTarget =
  | { kind: 'sources'; id: string }
  | { kind: 'destinations'; id: string }
  | { kind: 'plans'; source: string; name: string }
  /** The whole `plans` list of a source (it may hold `file:` references, which have no name). */
  | { kind: 'plan-list'; source: string }
  | { kind: 'functions'; owner: EntryKind; ownerId: string; id: string };

/** An edit that cannot be made, with the reason (the route answers 400 or 404). */
export class ConfigEditError extends Error {
  constructor(
    readonly kind: 'not-found' | 'bad-request',
    readonly what: string,
    readonly entry: string,
    message?: string,
  ) {
    super(message ?? `${what} "${entry}"`);
  }
}

/** SHA-256 of a configuration file's text: how a start tells whether the file changed. */
export function configHash(text: string): string {
  return createHash('sha256').update(text).digest('hex');
}

/**
 * Validates configuration text as `tributary start` does (YAML, `${ENV}` references from
 * `env`, the zod schema with its cross-entry checks) and returns every problem with its path.
 */
export function validateConfigText(text: string, env: Record<string, string | undefined>): ValidatedConfig {
  const doc = parseDocument(text, { prettyErrors: true });
  if (doc.errors.length > 0)
    return { ok: false, issues: doc.errors.map((e) => ({ path: '(yaml)', message: e.message })) };
  const raw = doc.toJS() as unknown;
  if (raw === null || typeof raw !== 'object' || Array.isArray(raw))
    return { ok: false, issues: [{ path: '(root)', message: 'expected a mapping of settings' }] };
  const problems: string[] = [];
  const resolved = substitute(raw, [], env, problems);
  if (problems.length > 0) return { ok: false, issues: problems.map(issueOfLine) };
  const parsed = TributaryConfig.safeParse(resolved);
  if (!parsed.success)
    return {
      ok: false,
      issues: parsed.error.issues.map((i) => ({ path: formatPath(i.path), message: i.message })),
    };
  return { ok: true, config: parsed.data, raw: raw as Record<string, unknown> };
}

/** `  sources[0].secret: message` (the loader's form) as an issue. */
function issueOfLine(line: string): ConfigIssue {
  const t = line.trim();
  const at = t.indexOf(': ');
  return at < 0 ? { path: '(root)', message: t } : { path: t.slice(0, at), message: t.slice(at + 2) };
}

/**
 * Applies one edit to configuration text and returns the new text. Entries outside the one
 * changed keep their comments and layout. Does not validate: the caller validates the result.
 * @throws ConfigEditError when the entry does not exist (patch, delete) or the body is not an
 *   object whose `id`/`name` matches the path.
 */
export function applyEdit(text: string, edit: ConfigEdit): string {
  const doc = parseDocument(text);
  const raw = (doc.toJS() ?? {}) as Record<string, unknown>;
  const t = edit.target;
  if (t.kind === 'sources' || t.kind === 'destinations') {
    const list = entries(doc, raw, t.kind);
    const i = list.findIndex((e) => isObject(e) && e.id === t.id);
    if (edit.op === 'delete') {
      if (i < 0) throw new ConfigEditError('not-found', singular(t.kind), t.id);
      doc.deleteIn([t.kind, i]);
      return doc.toString();
    }
    if (edit.op === 'patch' && i < 0) throw new ConfigEditError('not-found', singular(t.kind), t.id);
    const next = edit.op === 'put' ? named(edit.body, 'id', t.id) : patched(list[i], edit.body, 'id', t.id);
    setEntry(doc, [t.kind], i, next);
    return doc.toString();
  }
  const ownerKind: EntryKind = t.kind === 'functions' ? t.owner : 'sources';
  const ownerId = t.kind === 'functions' ? t.ownerId : t.source;
  const owners = entries(doc, raw, ownerKind);
  const oi = owners.findIndex((e) => isObject(e) && e.id === ownerId);
  if (oi < 0) throw new ConfigEditError('not-found', singular(ownerKind), ownerId);
  const owner = structuredClone(owners[oi]) as Record<string, unknown>;
  if (t.kind === 'plan-list') {
    if (edit.op === 'delete') delete owner.plans;
    else if (edit.op === 'put') {
      if (!Array.isArray(edit.body))
        throw new ConfigEditError('bad-request', 'plans', ownerId, 'send a JSON array of plans');
      owner.plans = edit.body;
    } else
      throw new ConfigEditError(
        'bad-request',
        'plans',
        ownerId,
        'patch one plan by its name: PATCH …/plans/<name>',
      );
  } else {
    const key = t.kind === 'plans' ? 'plans' : 'transformations';
    const by = t.kind === 'plans' ? 'name' : 'id';
    const name = t.kind === 'plans' ? t.name : t.id;
    const what =
      t.kind === 'plans' ? `plan of source ${ownerId}` : `function of ${singular(ownerKind)} ${ownerId}`;
    const list = Array.isArray(owner[key]) ? (owner[key] as unknown[]) : [];
    const j = list.findIndex((e) => isObject(e) && e[by] === name);
    if (edit.op === 'delete') {
      if (j < 0) throw new ConfigEditError('not-found', what, name);
      list.splice(j, 1);
    } else if (edit.op === 'patch') {
      if (j < 0) throw new ConfigEditError('not-found', what, name);
      list[j] = patched(list[j], edit.body, by, name);
    } else {
      const item = named(edit.body, by, name);
      if (j < 0) list.push(item);
      else list[j] = item;
    }
    if (list.length > 0) owner[key] = list;
    else delete owner[key];
  }
  doc.setIn([ownerKind, oi], doc.createNode(owner));
  return doc.toString();
}

/**
 * The list of `kind` as the text has it; a configuration without `destinations:` gets the
 * default list written out first, so adding one keeps the default warehouse.
 */
function entries(doc: Document, raw: Record<string, unknown>, kind: EntryKind): unknown[] {
  if (Array.isArray(raw[kind])) return raw[kind] as unknown[];
  if (kind === 'destinations') {
    const defaults = defaultDestinations(raw);
    doc.set(kind, doc.createNode(defaults));
    return defaults;
  }
  doc.set(kind, doc.createNode([]));
  return [];
}

/** The destinations a configuration without `destinations:` has (see `TributaryConfig`). */
function defaultDestinations(raw: Record<string, unknown>): Record<string, unknown>[] {
  const state = raw.state;
  return isObject(state) && state.type === 'postgres'
    ? [{ id: 'warehouse', type: 'postgres', connectionString: state.connectionString }]
    : DEFAULT_DESTINATIONS.map((d) => ({ ...d }));
}

function setEntry(doc: Document, path: string[], i: number, value: unknown): void {
  const node = doc.createNode(value);
  if (i >= 0) doc.setIn([...path, i], node);
  else {
    const seq = doc.getIn(path);
    if (isSeq(seq)) seq.items.push(node);
    else doc.setIn(path, doc.createNode([value]));
  }
}

/** The body as an entry named `name` (its `key` set from the path, or checked against it). */
function named(body: unknown, key: string, name: string): Record<string, unknown> {
  if (!isObject(body)) throw new ConfigEditError('bad-request', key, name, 'send a JSON object');
  if (body[key] !== undefined && body[key] !== name)
    throw new ConfigEditError(
      'bad-request',
      key,
      name,
      `the body's ${key} "${String(body[key])}" is not the one in the path, "${name}"`,
    );
  return { [key]: name, ...body };
}

/** `current` with the JSON Merge Patch (RFC 7396) `patch`; its `key` may not change. */
function patched(current: unknown, patch: unknown, key: string, name: string): Record<string, unknown> {
  if (!isObject(patch))
    throw new ConfigEditError('bad-request', key, name, 'send a JSON object (a merge patch)');
  const next = mergePatch(structuredClone(current), patch) as unknown;
  if (!isObject(next) || next[key] !== name)
    throw new ConfigEditError('bad-request', key, name, `a patch cannot change the ${key}`);
  return next;
}

function singular(kind: EntryKind): string {
  return kind === 'sources' ? 'source' : 'destination';
}

function isObject(v: unknown): v is Record<string, unknown> {
  return v !== null && typeof v === 'object' && !Array.isArray(v);
}

const ENV_REF_ONLY = /^\$\{[A-Za-z_][A-Za-z0-9_]*\}$/;
const URL_PASSWORD = /^([a-z][a-z0-9+.-]*:\/\/[^:@/]*:)([^@/]*)@/i;

/**
 * The configuration with anything secret-looking that is not an `${ENV}` reference replaced by
 * `[redacted]`: values under secret keys, and passwords inside URLs. The loader refuses such
 * literals anyway, so this is a second guard for what the admin API shows.
 */
export function redact(value: unknown, key?: string): unknown {
  if (typeof value === 'string') {
    if (key !== undefined && SECRET_KEY.test(key) && !ENV_REF_ONLY.test(value)) return '[redacted]';
    const m = URL_PASSWORD.exec(value);
    if (m && m[2] !== '' && !ENV_REF_ONLY.test(m[2]!)) return value.replace(URL_PASSWORD, '$1[redacted]@');
    return value;
  }
  if (Array.isArray(value)) return value.map((v) => redact(v));
  if (isObject(value)) {
    const out: Record<string, unknown> = {};
    for (const [k, v] of Object.entries(value)) out[k] = redact(v, k);
    return out;
  }
  return value;
}

/** The text redacted: unchanged when nothing needed it (comments kept), else rendered again. */
export function redactText(text: string): string {
  const raw = parseDocument(text).toJS() as unknown;
  const safe = redact(raw);
  return dequal(raw, safe) ? text : stringify(safe);
}

/** What changed between two configurations, entry by entry. */
export interface ConfigChange {
  /** `sources`, `destinations`, or another top-level key. */
  section: string;
  /** The entry's id (sources, destinations). */
  id?: string;
  change: 'added' | 'removed' | 'changed';
  /** Keys of the entry (or section) that differ. */
  keys?: string[];
}

/** The entries added, removed and changed from `a` to `b` (raw configurations, in order of `b`). */
export function structuralDiff(a: Record<string, unknown>, b: Record<string, unknown>): ConfigChange[] {
  // No `destinations:` means the default ones: writing them out is no change.
  if (a.destinations === undefined && b.destinations !== undefined)
    a = { ...a, destinations: defaultDestinations(a) };
  if (b.destinations === undefined && a.destinations !== undefined)
    b = { ...b, destinations: defaultDestinations(b) };
  const out: ConfigChange[] = [];
  const sections = new Set([...Object.keys(a), ...Object.keys(b)]);
  for (const section of sections) {
    const x = a[section];
    const y = b[section];
    if (dequal(x, y)) continue;
    if ((section === 'sources' || section === 'destinations') && (Array.isArray(x) || Array.isArray(y))) {
      const byId = (l: unknown) =>
        new Map((Array.isArray(l) ? l : []).filter(isObject).map((e) => [String(e.id), e] as const));
      const before = byId(x);
      const after = byId(y);
      for (const [id, e] of after) {
        const old = before.get(id);
        if (!old) out.push({ section, id, change: 'added' });
        else if (!dequal(old, e)) out.push({ section, id, change: 'changed', keys: changedKeys(old, e) });
      }
      for (const id of before.keys()) if (!after.has(id)) out.push({ section, id, change: 'removed' });
      continue;
    }
    out.push({
      section,
      change: x === undefined ? 'added' : y === undefined ? 'removed' : 'changed',
      ...(isObject(x) && isObject(y) ? { keys: changedKeys(x, y) } : {}),
    });
  }
  return out;
}

function changedKeys(a: Record<string, unknown>, b: Record<string, unknown>): string[] {
  return [...new Set([...Object.keys(a), ...Object.keys(b)])].filter((k) => !dequal(a[k], b[k]));
}

/** A unified diff of two versions' texts (`--- version 3`, `+++ version 5`). */
export function unifiedDiff(from: { n: number; yaml: string }, to: { n: number; yaml: string }): string {
  const p = structuredPatch(`version ${from.n}`, `version ${to.n}`, from.yaml, to.yaml, '', '', {
    context: 3,
  });
  const lines = [`--- version ${from.n}`, `+++ version ${to.n}`];
  for (const h of p.hunks) {
    lines.push(`@@ -${h.oldStart},${h.oldLines} +${h.newStart},${h.newLines} @@`, ...h.lines);
  }
  return `${lines.join('\n')}\n`;
}

/** The raw (unresolved) configuration of a text, for diffs and the API's reads. */
export function rawOf(text: string): Record<string, unknown> {
  const v = parseDocument(text).toJS() as unknown;
  return isObject(v) ? v : {};
}
