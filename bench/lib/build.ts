/** Builds dist/ when a benchmark runs the compiled CLI and dist/ is missing or stale. */
import { spawnSync } from 'node:child_process';
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';

function newestMtime(path: string): number {
  const st = statSync(path);
  if (!st.isDirectory()) return st.mtimeMs;
  let newest = st.mtimeMs;
  for (const entry of readdirSync(path)) newest = Math.max(newest, newestMtime(join(path, entry)));
  return newest;
}

/** Runs `npm run build` when dist/ is missing or older than src/ or the TypeScript configs. */
export function ensureBuild(root: string, log: (line: string) => void): { built: boolean; ms: number } {
  const entry = join(root, 'dist/cli/index.js');
  const inputs = Math.max(
    newestMtime(join(root, 'src')),
    ...['tsconfig.json', 'tsconfig.build.json', 'package.json']
      .map((f) => join(root, f))
      .filter((f) => existsSync(f))
      .map((f) => statSync(f).mtimeMs),
  );
  if (existsSync(entry) && statSync(entry).mtimeMs >= inputs) return { built: false, ms: 0 };
  log(existsSync(entry) ? 'dist/ is older than src/: building…' : 'dist/ is missing: building…');
  const started = Date.now();
  const r = spawnSync('npm', ['run', 'build', '--silent'], { cwd: root, stdio: 'inherit', timeout: 300_000 });
  if (r.status !== 0) throw new Error(`npm run build failed (${r.error?.message ?? `exit ${r.status}`})`);
  return { built: true, ms: Date.now() - started };
}

/**
 * The Node options the server runs with: those of the CLI's `#!/usr/bin/env -S node …` line,
 * which `npm start` repeats. Benchmarks that start the server pass them too.
 */
export function serverNodeOptions(root: string): string[] {
  const first = readFileSync(join(root, 'src/cli/index.ts'), 'utf8').split('\n', 1)[0] ?? '';
  const m = /^#!\/usr\/bin\/env(?: -S)? node((?: --?[\w-]+(?:=\S+)?)*)$/.exec(first);
  if (!m) throw new Error(`src/cli/index.ts: unexpected first line ${first}`);
  return m[1]!.split(' ').filter((a) => a !== '');
}
