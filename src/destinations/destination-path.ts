import { constants } from 'node:fs';
import { access, stat } from 'node:fs/promises';
import { dirname, isAbsolute, join } from 'node:path';
import { TributaryError } from '../errors.js';
import type { CheckResult } from './connector.js';

/** Where a DuckDB destination's file or a lake's folder is: `path` as given, or under the data folder. */
export function destinationPath(dataDir: string, path: string): string {
  return isAbsolute(path) ? path : join(dataDir, path);
}

/**
 * Whether a destination can write at `path` without writing anything: an existing entry must
 * be of the `kind` expected and writable; a missing one needs its nearest existing folder to
 * be writable (the destination creates the rest).
 */
export async function checkWritablePath(
  id: string,
  path: string,
  kind: 'file' | 'directory',
): Promise<CheckResult> {
  const fail = (why: string): CheckResult => {
    const err = new TributaryError('TRIB_ERR_DEST_CHECK_PATH', [id, path, why]);
    return { ok: false, code: err.code, message: err.message };
  };
  let at = path;
  for (;;) {
    try {
      const s = await stat(at);
      if (at === path && kind === 'file' && !s.isFile()) return fail('not a file');
      if ((at !== path || kind === 'directory') && !s.isDirectory()) return fail(`${at} is not a folder`);
      await access(at, constants.W_OK);
      return { ok: true };
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code === 'EACCES' || code === 'EPERM') return fail(`no write permission on ${at}`);
      if (code !== 'ENOENT' && code !== 'ENOTDIR') return fail((err as Error).message);
      const up = dirname(at);
      if (up === at) return fail('no folder of it exists');
      at = up;
    }
  }
}
