/** Builds dist/ when a benchmark runs the compiled CLI and dist/ is missing or stale. */
import { spawnSync } from 'node:child_process';
import { existsSync, readdirSync, statSync } from 'node:fs';
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
