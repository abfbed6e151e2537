import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { TributaryError } from '../errors.js';
import { ensureWorkspaceConfig, loadConfigFile, parseConfig } from './load.js';

function problems(yaml: string, env: Record<string, string> = {}): string {
  try {
    parseConfig(yaml, env);
  } catch (err) {
    expect(err).toBeInstanceOf(TributaryError);
    expect((err as TributaryError).code).toBe('TRIB_ERR_CONFIG_INVALID');
    return (err as Error).message;
  }
  throw new Error('expected the configuration to be refused');
}

describe('parseConfig', () => {
  it('accepts the minimal form and fills defaults', () => {
    const { config } = parseConfig(
      'version: 1\nsources:\n  - id: web\n    type: http\n    writeKey: wk_web_123\n',
      {},
    );
    expect(config.sources).toEqual([{ id: 'web', type: 'http', writeKey: 'wk_web_123', enabled: true }]);
    expect(config.server).toEqual({
      host: '127.0.0.1',
      port: 8080,
      shutdownTimeout: 30_000,
      health: { stallAfter: 300_000 },
      requestTimeout: 30_000,
      headersTimeout: 10_000,
      keepAliveTimeout: 72_000,
      connectionTimeout: 300_000,
      maxConnectionsPerClient: 128,
      trustProxy: false,
    });
    expect(config.pipeline.dedupe.window).toBe(7 * 86_400_000);
    expect(config.storage).toEqual({ dataDir: '.tributary', memoryLimit: '2GB' });
  });

  it('takes a memory limit as a size and refuses anything else', () => {
    const base = 'version: 1\nsources:\n  - {id: a, type: http, writeKey: k}\n';
    expect(parseConfig(`${base}storage: {memoryLimit: 512MB}\n`, {}).config.storage.memoryLimit).toBe(
      '512MB',
    );
    expect(problems(`${base}storage: {memoryLimit: lots}\n`)).toContain('storage.memoryLimit');
  });

  it('names the key path and what is wrong', () => {
    const msg = problems(
      'version: 1\nsources:\n  - id: web\n    type: http\n  - id: Bad Id\n    type: http\n    writeKey: k\n  - id: c\n    type: ftp\n',
    );
    expect(msg).toContain('sources[0].writeKey');
    expect(msg).toContain('sources[1].id');
    // Source types are a union: an unknown type is reported, not the keys of a type it is not.
    expect(msg).toContain('sources[2].type');
  });

  it('refuses unknown keys, another major version, duplicate ids and keys', () => {
    expect(problems('version: 1\nsorces: []\nsources:\n  - {id: a, type: http, writeKey: k}\n')).toContain(
      'sorces',
    );
    expect(problems('version: 2\nsources:\n  - {id: a, type: http, writeKey: k}\n')).toContain('version');
    const dup = problems(
      'version: 1\nsources:\n  - {id: a, type: http, writeKey: k}\n  - {id: a, type: http, writeKey: k}\n',
    );
    expect(dup).toContain('sources[1].id: duplicate source id "a"');
    expect(dup).toContain('sources[1].writeKey');
  });

  it('warns on a newer minor version', () => {
    const { warnings } = parseConfig('version: "1.3"\nsources:\n  - {id: a, type: http, writeKey: k}\n', {});
    expect(warnings[0]).toContain('newer');
  });

  it('replaces ${ENV} references and reports a missing variable with its key', () => {
    const { config } = parseConfig('version: 1\nsources:\n  - {id: a, type: http, writeKey: "${WK}"}\n', {
      WK: 'from-env',
    });
    expect((config.sources[0] as { writeKey?: string }).writeKey).toBe('from-env');
    expect(problems('version: 1\nsources:\n  - {id: a, type: http, writeKey: "${NOPE}"}\n')).toContain(
      'sources[0].writeKey: environment variable NOPE is not set',
    );
  });

  it('takes secrets only as ${ENV} references', () => {
    const msg = problems('version: 1\nsources:\n  - {id: a, type: http, writeKey: k, password: hunter2}\n');
    expect(msg).toContain('sources[0].password: a secret must be given as an environment reference');
  });

  it('parses durations', () => {
    const { config } = parseConfig(
      'version: 1\nsources:\n  - {id: a, type: http, writeKey: k}\npipeline:\n  dedupe: {window: 36h}\n',
      {},
    );
    expect(config.pipeline.dedupe.window).toBe(36 * 3_600_000);
    expect(
      problems(
        'version: 1\nsources:\n  - {id: a, type: http, writeKey: k}\npipeline:\n  dedupe: {window: soon}\n',
      ),
    ).toContain('pipeline.dedupe.window');
  });

  it('reads the scale-out ports, which go together, and defaults the warehouse to the state database', () => {
    const base = 'version: 1\nsources:\n  - {id: a, type: http, writeKey: k}\n';
    const embedded = parseConfig(base, {}).config;
    expect(embedded.log).toEqual({ type: 'duckdb' });
    expect(embedded.state).toEqual({ type: 'duckdb' });
    expect(embedded.destinations.map((d) => [d.id, d.type])).toEqual([['warehouse', 'duckdb']]);

    const scaled = parseConfig(
      `${base}log: {type: nats, partitions: 4}\nstate: {type: postgres, connectionString: "postgres://u:\${PW}@db/cdp"}\n`,
      { PW: 'secret' },
    ).config;
    expect(scaled.log).toEqual({
      type: 'nats',
      servers: ['nats://127.0.0.1:4222'],
      stream: 'tributary',
      partitions: 4,
      replicas: 1,
      duplicateWindow: 120_000,
    });
    expect(scaled.state).toMatchObject({
      type: 'postgres',
      connectionString: 'postgres://u:secret@db/cdp',
      schema: 'tributary',
    });
    expect(scaled.destinations).toMatchObject([
      { id: 'warehouse', type: 'postgres', connectionString: 'postgres://u:secret@db/cdp' },
    ]);

    // The query role's password, like the state's, comes from the environment.
    expect(
      problems(
        `${base}log: {type: nats}\nstate: {type: postgres, connectionString: "postgres://db/x", queryConnectionString: "postgres://r:pw@db/x"}\n`,
      ),
    ).toContain('state.queryConnectionString: the password must be given as an environment reference');
    expect(
      parseConfig(
        `${base}log: {type: nats}\nstate: {type: postgres, connectionString: "postgres://db/x", queryConnectionString: "postgres://r:\${RPW}@db/x"}\n`,
        { RPW: 'pw' },
      ).config.state,
    ).toMatchObject({ queryConnectionString: 'postgres://r:pw@db/x' });
    expect(parseConfig(base, {}).config.query).toEqual({
      maxRows: 10_000,
      maxBytes: 16 * 1024 * 1024,
      timeout: 30_000,
      maxConcurrent: 2,
    });
    expect(problems(`${base}log: {type: nats}\n`)).toContain('state: scale-out needs both');
    expect(problems(`${base}state: {type: postgres, connectionString: "postgres://db/x"}\n`)).toContain(
      'log: scale-out needs both',
    );
    expect(
      problems(
        `${base}log: {type: nats}\nstate: {type: postgres, connectionString: "postgres://db/x"}\ndestinations: [{id: w, type: duckdb}]\n`,
      ),
    ).toContain('destinations[0].type');
    expect(
      problems(
        `${base}state: {type: postgres, connectionString: "postgres://u:pw@db/x"}\nlog: {type: nats}\n`,
      ),
    ).toContain('state.connectionString');
  });

  it('reports YAML syntax errors', () => {
    expect(problems('version: 1\nsources: [\n')).toMatch(/config/);
  });
});

describe('workspace files', () => {
  it('creates a workspace config once, with a fresh write key, that loads', () => {
    const dir = mkdtempSync(join(tmpdir(), 'trib-ws-'));
    const first = ensureWorkspaceConfig(dir);
    expect(first.created).toBe(true);
    const text = readFileSync(first.path, 'utf8');
    expect(ensureWorkspaceConfig(dir).created).toBe(false);
    expect(readFileSync(first.path, 'utf8')).toBe(text);
    const { config } = loadConfigFile(first.path, {});
    expect((config.sources[0] as { writeKey?: string }).writeKey).toMatch(/^wk_[0-9a-f]{24}$/);
  });

  it('reports a missing file with a stable code', () => {
    expect(() => loadConfigFile('/nonexistent/tributary.yaml', {})).toThrow(
      expect.objectContaining({ code: 'TRIB_ERR_CONFIG_NOT_FOUND' }),
    );
  });
});
