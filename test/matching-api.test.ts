import { execFile } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ADMIN_TOKEN, basicAuth, startTestServer, type TestServer, WRITE_KEY } from './helpers.js';
import { people } from './identity/people.js';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const CLI = ['--import', import.meta.resolve('tsx'), join(ROOT, 'src/cli/index.ts')];

// The default people fields and blocking; the traits use the camelCase names of analytics.js.
const YAML = `version: 1
sources:
  - id: web
    type: http
    writeKey: ${WRITE_KEY}
identity:
  matching:
    enabled: true
`;

let server: TestServer;
let dir: string;

beforeAll(async () => {
  server = await startTestServer({ yaml: YAML });
  dir = mkdtempSync(join(tmpdir(), 'trib-matching-'));
  writeFileSync(join(dir, 'tributary.yaml'), YAML);
});
afterAll(async () => {
  await server?.stop();
  rmSync(dir, { recursive: true, force: true });
});

async function cli(args: string[]) {
  const r = await promisify(execFile)(process.execPath, [...CLI, ...args, '--url', server.url], {
    cwd: dir,
    env: { ...process.env, TRIBUTARY_ADMIN_TOKEN: ADMIN_TOKEN },
  });
  return r.stdout;
}

describe('probabilistic matching in the embedded server (API and CLI)', () => {
  it('a full run from the CLI merges one person’s devices; get shows the merge, explain the waterfall', {
    timeout: 90_000,
  }, async () => {
    const { events } = people(150, 11);
    const batch = events.map(({ at, traits, ...e }) => {
      const t = traits as Record<string, string>;
      return {
        ...e,
        timestamp: new Date(Date.UTC(2026, 10, 1) + at * 1000).toISOString(),
        traits: { firstName: t.first_name, lastName: t.last_name, birthday: t.dob, city: t.city },
      };
    });
    const res = await fetch(`${server.url}/v1/batch`, {
      method: 'POST',
      headers: { authorization: basicAuth(WRITE_KEY), 'content-type': 'application/json' },
      body: JSON.stringify({ batch }),
    });
    expect(res.status).toBe(200);
    await server.settle();
    await server.identity!.drained();
    const before = server.identity!.profileCount();
    expect(before).toBe(250);

    const run = await cli(['profiles', 'matches', '--run', '--status', 'merged', '--limit', '1']);
    expect(run).toMatch(/^matched 250 profiles: \d+ candidate pairs, \d+ merged, 0 refused/);
    const merged = server.identity!.profileCount();
    expect(merged).toBeLessThan(before - 50);
    expect(server.identity!.lookup('anonymous_id:anon-1-0')!.id).toBe(
      server.identity!.lookup('anonymous_id:anon-1-1')!.id,
    );

    const got = await cli(['profiles', 'get', 'anonymous_id:anon-1-0']);
    expect(got).toMatch(/merged by probabilistic match [0-9a-f-]{36}/);

    // One person through a probabilistic merge: explain shows the evidence it was merged on.
    const same = await cli(['profiles', 'explain', 'anonymous_id:anon-1-0', 'anonymous_id:anon-1-1']);
    expect(same).toMatch(/^one person/);
    expect(same).toMatch(/merged by probabilistic match [0-9a-f-]{36} \(merge [0-9a-f-]{36}\)\nmatch weight/);
    expect(same).toMatch(/first_name +exact/);

    // Two different people: explain says they are not one person, and shows the weights.
    const why = await cli(['profiles', 'explain', 'anonymous_id:anon-1-0', 'anonymous_id:anon-2-0']);
    expect(why).toMatch(/^not one person/);
    expect(why).toMatch(/match weight \(log2 odds\):\n {2}prior +-\d+\.\d\d\n {2}first_name /);
    expect(why).toMatch(/total +-?\d+\.\d\d {3}probability 0\.\d{4}/);
  });
});
