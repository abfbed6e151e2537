import { join } from 'node:path';
import { DuckDBInstance } from '@duckdb/node-api';
import type { Logger } from 'pino';
import {
  applyEdit,
  type ConfigChange,
  type ConfigEdit,
  ConfigEditError,
  type ConfigIssue,
  configHash,
  rawOf,
  redactText,
  structuralDiff,
  unifiedDiff,
  validateConfigText,
} from '../config/config-document.js';
import type { TributaryConfig } from '../config/schema.js';
import { TributaryError } from '../errors.js';
import { Turns } from '../platform/async/turns.js';
import { embeddedDuckDBOptions } from '../platform/duckdb/duckdb-options.js';
import type { ConfigVersion, ConfigVersionStore, ConfigVersionSummary } from '../store/config-versions.js';
import { summaryOf } from '../store/config-versions.js';
import { DuckDBConfigVersions } from '../store/duckdb/duckdb-config-versions.js';

/** `TRIB_ERR_CONFIG_CHANGE_INVALID` with each problem's key path in the answer's `issues`. */
export class ConfigChangeError extends TributaryError {
  constructor(readonly issues: ConfigIssue[]) {
    super('TRIB_ERR_CONFIG_CHANGE_INVALID', [issues.map((i) => `  ${i.path}: ${i.message}`).join('\n')]);
  }

  override toJSON(): ReturnType<TributaryError['toJSON']> & { issues: ConfigIssue[] } {
    return { ...super.toJSON(), issues: this.issues };
  }
}

/** Who changes the configuration and why. */
export interface ChangeContext {
  /** The principal: the token kind for now (`admin-token`); users once governance names them. */
  author: string;
  message?: string;
  /** The version the change was made against (If-Match); another current version is a 409. */
  ifMatch?: number;
}

export interface ChangeResult {
  version: ConfigVersionSummary;
  changes: ConfigChange[];
}

export interface ConfigServiceDeps {
  store: ConfigVersionStore;
  /** The version running. */
  current: ConfigVersion;
  env: Record<string, string | undefined>;
  /**
   * Checks across entries that read files (plan files, function files, the DuckDB folders)
   * and throws a TributaryError naming the problem; `tributary config check` runs the same.
   */
  crossCheck(config: TributaryConfig): void;
  /** Applies a validated configuration to the running server, calling `commit` once it can. */
  apply<T>(config: TributaryConfig, commit: () => Promise<T>): Promise<T>;
}

/**
 * The configuration through the admin API: reads of the versions, and changes, each validated
 * as the file is, applied to the running server and stored as the next version, one at a time.
 */
export class ConfigService {
  private readonly turns = new Turns();
  private current: ConfigVersion;

  constructor(private readonly deps: ConfigServiceDeps) {
    this.current = deps.current;
  }

  /** The version running. */
  running(): ConfigVersion {
    return this.current;
  }

  list(limit?: number): Promise<ConfigVersionSummary[]> {
    return this.deps.store.listConfigVersions(limit);
  }

  /** @throws `TRIB_ERR_CONFIG_VERSION_NOT_FOUND` */
  async version(n: number): Promise<ConfigVersion> {
    const v = await this.deps.store.configVersion(n);
    if (!v) throw new TributaryError('TRIB_ERR_CONFIG_VERSION_NOT_FOUND', [String(n)]);
    return v;
  }

  /** Entries changed and a unified diff from version `from` to `to`. */
  async diff(
    from: number,
    to: number,
  ): Promise<{ from: number; to: number; changes: ConfigChange[]; diff: string }> {
    const [a, b] = [await this.version(from), await this.version(to)];
    const [x, y] = [redactText(a.yaml), redactText(b.yaml)];
    return {
      from,
      to,
      changes: structuralDiff(rawOf(x), rawOf(y)),
      diff: unifiedDiff({ n: from, yaml: x }, { n: to, yaml: y }),
    };
  }

  /** Applies one edit. @throws 400/404/409 TributaryErrors; nothing changes when it throws. */
  change(edit: ConfigEdit, ctx: ChangeContext): Promise<ChangeResult> {
    return this.turns.run(async () => {
      this.checkIfMatch(ctx);
      let text: string;
      try {
        text = applyEdit(this.current.yaml, edit);
      } catch (err) {
        if (!(err instanceof ConfigEditError)) throw err;
        if (err.kind === 'not-found')
          throw new TributaryError('TRIB_ERR_CONFIG_ENTRY_NOT_FOUND', [err.what, err.entry]);
        throw new TributaryError('TRIB_ERR_CONFIG_BAD_REQUEST', [err.message]);
      }
      return this.store(text, 'api', ctx.message ?? describeEdit(edit), ctx);
    });
  }

  /** Makes a new version equal to version `n`. */
  revert(n: number, ctx: ChangeContext): Promise<ChangeResult> {
    return this.turns.run(async () => {
      this.checkIfMatch(ctx);
      const old = await this.version(n);
      return this.store(old.yaml, 'revert', ctx.message ?? `revert to version ${n}`, ctx);
    });
  }

  private checkIfMatch(ctx: ChangeContext): void {
    if (ctx.ifMatch !== undefined && ctx.ifMatch !== this.current.n)
      throw new TributaryError('TRIB_ERR_CONFIG_VERSION_CONFLICT', [this.current.n, ctx.ifMatch]);
  }

  private async store(
    text: string,
    origin: 'api' | 'revert',
    message: string,
    ctx: ChangeContext,
  ): Promise<ChangeResult> {
    const checked = validateConfigText(text, this.deps.env);
    if (!checked.ok) throw new ConfigChangeError(checked.issues);
    try {
      this.deps.crossCheck(checked.config);
    } catch (err) {
      if (!(err instanceof TributaryError)) throw err;
      throw new ConfigChangeError([{ path: err.code, message: err.message }]);
    }
    const changes = structuralDiff(rawOf(this.current.yaml), checked.raw);
    // Nothing to apply or to store: the version running stays.
    if (changes.length === 0) return { version: summaryOf(this.current), changes };
    const stored = await this.deps.apply(checked.config, () =>
      this.deps.store.appendConfigVersion(
        { author: ctx.author, message, origin, yaml: text },
        this.current.n,
      ),
    );
    this.current = stored;
    return { version: summaryOf(stored), changes };
  }
}

function describeEdit(edit: ConfigEdit): string {
  const t = edit.target;
  const what =
    t.kind === 'sources' || t.kind === 'destinations'
      ? `${t.kind}/${t.id}`
      : t.kind === 'plans'
        ? `sources/${t.source}/plans/${t.name}`
        : t.kind === 'plan-list'
          ? `sources/${t.source}/plans`
          : `${t.owner}/${t.ownerId}/functions/${t.id}`;
  return `${edit.op.toUpperCase()} ${what}`;
}

/** Which configuration a start runs, and why. */
export interface StartConfig {
  config: TributaryConfig;
  version: ConfigVersion;
  /** `file`: the file is new or changed and became this version; `stored`: the file is unchanged since its last version, so the latest version (maybe made through the API) runs. */
  decision: 'file' | 'stored';
}

/**
 * The configuration a start runs: the file when it is new or changed since the last version
 * read from it (it then becomes the next version), else the latest stored version, which may
 * have been made through the admin API since.
 * @throws TributaryError `TRIB_ERR_CONFIG_INVALID` when the stored version that would run no
 *   longer validates (an `${ENV}` variable it names is gone, say).
 */
export async function configAtStart(
  store: ConfigVersionStore,
  file: { text: string; path: string; config: TributaryConfig },
  env: Record<string, string | undefined>,
  logger: Logger,
): Promise<StartConfig> {
  const hash = configHash(file.text);
  const latest = await store.latestConfigVersion();
  const lastFile = await store.latestFileConfigVersion();
  if (latest && lastFile?.fileHash === hash) {
    if (latest.n === lastFile.n) return { config: file.config, version: latest, decision: 'stored' };
    const checked = validateConfigText(latest.yaml, env);
    if (!checked.ok)
      throw new TributaryError('TRIB_ERR_CONFIG_INVALID', [
        `configuration version ${latest.n} (the latest, made through the admin API) no longer validates:\n${checked.issues.map((i) => `  ${i.path}: ${i.message}`).join('\n')}\nrevert to a valid version, or change ${file.path} to make it the newest`,
      ]);
    logger.info(
      { version: latest.n, file: file.path },
      'running configuration version %d made through the admin API (the file is unchanged since version %d)',
      latest.n,
      lastFile.n,
    );
    return { config: checked.config, version: latest, decision: 'stored' };
  }
  if (latest && latest.origin !== 'file')
    logger.warn(
      { version: latest.n, file: file.path },
      'the configuration file changed since it was last read: it wins over version %d made through the admin API (still in the history: tributary config diff, tributary config revert)',
      latest.n,
    );
  const version = await store.appendConfigVersion({
    author: 'file',
    message: `read from ${file.path}`,
    origin: 'file',
    fileHash: hash,
    yaml: file.text,
  });
  return { config: file.config, version, decision: 'file' };
}

/**
 * {@link configAtStart} on an embedded workspace's warehouse file, opened and closed before
 * the server opens it (the configuration decides how the server opens its files).
 */
export async function embeddedConfigAtStart(
  dataDir: string,
  file: { text: string; path: string; config: TributaryConfig },
  env: Record<string, string | undefined>,
  logger: Logger,
): Promise<StartConfig> {
  const instance = await DuckDBInstance.create(
    join(dataDir, 'warehouse.duckdb'),
    embeddedDuckDBOptions(file.config.storage),
  );
  try {
    const store = await DuckDBConfigVersions.open(instance);
    try {
      return await configAtStart(store, file, env, logger);
    } finally {
      store.close();
    }
  } finally {
    instance.closeSync();
  }
}
