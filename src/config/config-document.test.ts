import { describe, expect, it } from 'vitest';
import {
  applyEdit,
  ConfigEditError,
  rawOf,
  redact,
  redactText,
  structuralDiff,
  unifiedDiff,
  validateConfigText,
} from './config-document.js';

const BASE = `# kept in git
version: 1
sources:
  # the website
  - id: web
    type: http
    writeKey: wk_web
  - id: app
    type: http
    writeKey: wk_app
`;

describe('applyEdit', () => {
  it('replaces one source and keeps the comments of the rest', () => {
    const out = applyEdit(BASE, {
      op: 'put',
      target: { kind: 'sources', id: 'app' },
      body: { type: 'http', writeKey: 'wk_app_2' },
    });
    expect(out).toContain('# kept in git');
    expect(out).toContain('# the website');
    expect(rawOf(out).sources).toEqual([
      { id: 'web', type: 'http', writeKey: 'wk_web' },
      { id: 'app', type: 'http', writeKey: 'wk_app_2' },
    ]);
  });

  it('adds a source with PUT, merges a PATCH, deletes with DELETE', () => {
    let t = applyEdit(BASE, {
      op: 'put',
      target: { kind: 'sources', id: 'new' },
      body: { type: 'http', writeKey: 'k3' },
    });
    t = applyEdit(t, {
      op: 'patch',
      target: { kind: 'sources', id: 'web' },
      body: { name: 'Website', writeKey: 'k1' },
    });
    t = applyEdit(t, { op: 'delete', target: { kind: 'sources', id: 'app' } });
    expect(rawOf(t).sources).toEqual([
      { id: 'web', type: 'http', writeKey: 'k1', name: 'Website' },
      { id: 'new', type: 'http', writeKey: 'k3' },
    ]);
  });

  it('refuses a body whose id is not the one in the path, and a patch of a missing entry', () => {
    expect(() =>
      applyEdit(BASE, {
        op: 'put',
        target: { kind: 'sources', id: 'web' },
        body: { id: 'other', type: 'http' },
      }),
    ).toThrow(ConfigEditError);
    const err = (() => {
      try {
        applyEdit(BASE, { op: 'patch', target: { kind: 'sources', id: 'nope' }, body: {} });
      } catch (e) {
        return e as ConfigEditError;
      }
    })();
    expect(err?.kind).toBe('not-found');
    expect(() =>
      applyEdit(BASE, { op: 'patch', target: { kind: 'sources', id: 'web' }, body: { id: 'x' } }),
    ).toThrow(/cannot change the id/);
  });

  it('writes the default warehouse out before adding a destination to a file without any', () => {
    const t = applyEdit(BASE, {
      op: 'put',
      target: { kind: 'destinations', id: 'pg' },
      body: { type: 'postgres', connectionString: 'postgres://u:${PG_PW}@db/x' },
    });
    expect(rawOf(t).destinations).toEqual([
      { id: 'warehouse', type: 'duckdb' },
      { id: 'pg', type: 'postgres', connectionString: 'postgres://u:${PG_PW}@db/x' },
    ]);
  });

  it('edits plans by name and functions by id inside their entry', () => {
    let t = applyEdit(BASE, {
      op: 'put',
      target: { kind: 'plans', source: 'web', name: 'p1' },
      body: { onUnplannedEvent: 'block', events: { 'Signed Up': {} } },
    });
    t = applyEdit(t, {
      op: 'patch',
      target: { kind: 'plans', source: 'web', name: 'p1' },
      body: { onViolation: 'block' },
    });
    t = applyEdit(t, {
      op: 'put',
      target: { kind: 'functions', owner: 'sources', ownerId: 'web', id: 'f1' },
      body: { file: 'f1.js' },
    });
    const web = (rawOf(t).sources as Record<string, unknown>[])[0]!;
    expect(web.plans).toEqual([
      { name: 'p1', onUnplannedEvent: 'block', events: { 'Signed Up': {} }, onViolation: 'block' },
    ]);
    expect(web.transformations).toEqual([{ id: 'f1', file: 'f1.js' }]);
    t = applyEdit(t, { op: 'delete', target: { kind: 'plans', source: 'web', name: 'p1' } });
    expect((rawOf(t).sources as Record<string, unknown>[])[0]!.plans).toBeUndefined();
  });
});

describe('validateConfigText', () => {
  it('gives each problem its key path, as the file loader does', () => {
    const r = validateConfigText(`${BASE}  - id: dup\n    type: http\n    writeKey: wk_web\n`, {});
    expect(r.ok).toBe(false);
    if (!r.ok)
      expect(r.issues).toContainEqual({
        path: 'sources[2].writeKey',
        message: 'write key already used by sources[0]',
      });
  });

  it('resolves ${ENV} references from the environment given and keeps them unresolved in raw', () => {
    const text = 'version: 1\nsources:\n  - id: s\n    type: http\n    writeKey: ${WK}\n';
    expect(validateConfigText(text, {}).ok).toBe(false);
    const r = validateConfigText(text, { WK: 'secret-key' });
    expect(r.ok && r.config.sources[0]).toMatchObject({ writeKey: 'secret-key' });
    expect(r.ok && (r.raw.sources as Record<string, unknown>[])[0]!.writeKey).toBe('${WK}');
  });
});

describe('redact', () => {
  it('hides literal secrets and URL passwords, never ${ENV} references', () => {
    expect(
      redact({ secret: '${S}', token: 'abc', url: 'postgres://u:pw@h/d', ref: 'postgres://u:${P}@h/d' }),
    ).toEqual({
      secret: '${S}',
      token: '[redacted]',
      url: 'postgres://u:[redacted]@h/d',
      ref: 'postgres://u:${P}@h/d',
    });
    expect(redactText(BASE)).toBe(BASE);
    expect(redactText('a:\n  password: hunter2\n')).not.toContain('hunter2');
  });
});

describe('diffs', () => {
  it('names the entries changed and gives a unified diff of the texts', () => {
    const next = applyEdit(BASE, {
      op: 'patch',
      target: { kind: 'sources', id: 'web' },
      body: { writeKey: 'k9' },
    });
    expect(structuralDiff(rawOf(BASE), rawOf(next))).toEqual([
      { section: 'sources', id: 'web', change: 'changed', keys: ['writeKey'] },
    ]);
    const d = unifiedDiff({ n: 1, yaml: BASE }, { n: 2, yaml: next });
    expect(d).toContain('--- version 1');
    expect(d).toContain('-    writeKey: wk_web');
    expect(d).toContain('+    writeKey: k9');
  });
});
