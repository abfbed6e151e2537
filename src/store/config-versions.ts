/**
 * The versions of the configuration (`config_versions`): each change made through the admin
 * API, and each configuration file that was new at a start, is one numbered version holding the
 * whole configuration as YAML text with its `${ENV}` references unresolved (never a secret's
 * value). Numbers start at 1 and grow by one; rows are never changed or deleted.
 */

/** Where a version came from. */
export type ConfigVersionOrigin = 'file' | 'api' | 'revert';

export interface ConfigVersionSummary {
  n: number;
  /** When it was stored, ISO 8601. */
  at: string;
  /** Who made it: the token kind for now (`admin-token`), `file` for a file read at a start. */
  author: string;
  message: string;
  origin: ConfigVersionOrigin;
  /** SHA-256 of the file's text, for versions read from the file (`origin: file`). */
  fileHash: string | null;
}

export interface ConfigVersion extends ConfigVersionSummary {
  /** The configuration as YAML text, `${ENV}` references as written. */
  yaml: string;
}

export interface NewConfigVersion {
  author: string;
  message: string;
  origin: ConfigVersionOrigin;
  fileHash?: string;
  yaml: string;
}

/** The configuration versions' part of the Store port. */
export interface ConfigVersionStore {
  /**
   * Stores `v` as the next version. With `expectLatest`, in the same transaction: when the
   * latest stored version is another (0: none), nothing is stored and it throws
   * `TRIB_ERR_CONFIG_VERSION_CONFLICT` (another process or request changed it first).
   */
  appendConfigVersion(v: NewConfigVersion, expectLatest?: number): Promise<ConfigVersion>;
  /** Version `n`, or undefined. */
  configVersion(n: number): Promise<ConfigVersion | undefined>;
  /** The newest version, or undefined when none is stored. */
  latestConfigVersion(): Promise<ConfigVersion | undefined>;
  /** The newest version read from the file (`origin: file`), or undefined. */
  latestFileConfigVersion(): Promise<ConfigVersion | undefined>;
  /** Versions, newest first, at most `limit` (default 100). */
  listConfigVersions(limit?: number): Promise<ConfigVersionSummary[]>;
}

/** Columns of `config_versions`, in both adapters. */
export const CONFIG_VERSION_COLUMNS = 'n, stored_at, author, message, origin, file_hash, yaml';

/** A row of `config_versions` as either engine returns it. */
export function configVersionOfRow(row: Record<string, unknown>): ConfigVersion {
  const at = row.stored_at;
  return {
    n: Number(row.n),
    at: at instanceof Date ? at.toISOString() : new Date(String(at)).toISOString(),
    author: String(row.author),
    message: String(row.message),
    origin: String(row.origin) as ConfigVersionOrigin,
    fileHash: row.file_hash === null || row.file_hash === undefined ? null : String(row.file_hash),
    yaml: String(row.yaml ?? ''),
  };
}

/** The summary of a version (without its text). */
export function summaryOf(v: ConfigVersion): ConfigVersionSummary {
  const { yaml: _yaml, ...summary } = v;
  return summary;
}
