import { existsSync, rmSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { compileFunction } from './compile.js';
import { Sandbox, type SandboxOptions } from './sandbox.js';

const open: Sandbox[] = [];
afterEach(async () => {
  for (const s of open.splice(0)) await s.close();
});

async function sandbox(source: string, over: Partial<SandboxOptions> = {}, filename = 'fn.js') {
  const s = new Sandbox({
    code: compileFunction(source, filename),
    filename,
    timeoutMs: 250,
    memoryMb: 16,
    env: {},
    ...over,
  });
  open.push(s);
  await s.start();
  return s;
}

describe('Sandbox', () => {
  it('runs a TypeScript function: one event, several, or none out', async () => {
    const s = await sandbox(
      `export default function (e: { n: number }): unknown {
         if (e.n === 0) return null;
         if (e.n === 2) return [e, { ...e, copy: true }];
         return { ...e, seen: true };
       }`,
      {},
      'fn.ts',
    );
    expect(await s.run([{ n: 0 }, { n: 1 }, { n: 2 }])).toEqual([
      { ok: true, events: [], logs: [] },
      { ok: true, events: [{ n: 1, seen: true }], logs: [] },
      { ok: true, events: [{ n: 2 }, { n: 2, copy: true }], logs: [] },
    ]);
  });

  it('a function that loops forever fails its event with a timeout and its log lines; the others pass', async () => {
    const s = await sandbox(
      `module.exports = (e) => { console.log('start', e.n); if (e.n === 2) for (;;) {} return e; }`,
    );
    const r = await s.run([{ n: 1 }, { n: 2 }, { n: 3 }]);
    expect(r[0]).toEqual({ ok: true, events: [{ n: 1 }], logs: ['log: start 1'] });
    expect(r[1]).toEqual({
      ok: false,
      code: 'TRIB_ERR_TRANSFORM_TIMEOUT',
      message: 'the function ran longer than 250 ms',
      logs: ['log: start 2'],
    });
    expect(r[2]).toEqual({ ok: true, events: [{ n: 3 }], logs: ['log: start 3'] });
    expect(await s.run([{ n: 4 }])).toEqual([{ ok: true, events: [{ n: 4 }], logs: ['log: start 4'] }]);
  });

  it('a function that allocates without bound fails its event on the heap limit; the sandbox recovers', async () => {
    const s = await sandbox(
      `module.exports = (e) => { if (e.big) { const a = []; for (;;) a.push({ x: Math.random(), s: 'k' + a.length }); } return e; }`,
      { timeoutMs: 30_000 },
    );
    const r = await s.run([{ n: 1 }, { big: true }, { n: 3 }]);
    expect(r.map((x) => (x.ok ? 'ok' : x.code))).toEqual(['ok', 'TRIB_ERR_TRANSFORM_MEMORY', 'ok']);
    expect(await s.run([{ n: 4 }])).toEqual([{ ok: true, events: [{ n: 4 }], logs: [] }]);
  });

  it('a throw fails that event with the message and the frames of the user file only', async () => {
    const s = await sandbox(
      `module.exports = (e) => { console.warn('about to fail', { id: 7 }); throw new TypeError('bad ' + e.n); }`,
    );
    const [r] = await s.run([{ n: 1 }]);
    expect(r).toMatchObject({
      ok: false,
      code: 'TRIB_ERR_TRANSFORM_THREW',
      logs: ['warn: about to fail {"id":7}'],
    });
    const message = (r as { message: string }).message;
    expect(message.split('\n')[0]).toBe('TypeError: bad 1');
    expect(message).not.toContain('worker');
  });

  it('gives no file system, environment, network or timers, even to code it generates; env only as granted', async () => {
    const s = await sandbox(
      `module.exports = () => {
         const probe = (f) => { try { return String(f()); } catch (e) { return 'error: ' + e.constructor.name; } };
         return {
           require: typeof require, process: typeof process, fetch: typeof fetch, setTimeout: typeof setTimeout,
           escape: probe(() => this.constructor.constructor('return typeof process')()),
           eval: probe(() => eval('1 + 1')),
           env: JSON.stringify(env),
         };
       }`,
      { env: { GRANTED: 'yes' } },
    );
    const [r] = await s.run([{}]);
    expect(r).toEqual({
      ok: true,
      events: [
        {
          require: 'undefined',
          process: 'undefined',
          fetch: 'undefined',
          setTimeout: 'undefined',
          // Code generation runs inside the engine too, where there is no host to reach.
          escape: 'undefined',
          eval: '2',
          env: '{"GRANTED":"yes"}',
        },
      ],
      logs: [],
    });
  });

  it('refuses a file that does not parse or exports no function, and an async function per event', async () => {
    await expect(sandbox('module.exports = 42')).rejects.toThrow(/must export a function/);
    expect(() => compileFunction('export default (', 'x.js')).toThrow();
    const s = await sandbox('export default async (e) => e');
    expect((await s.run([{}]))[0]).toMatchObject({ ok: false, code: 'TRIB_ERR_TRANSFORM_ASYNC' });
  });
});

describe('Sandbox with a network grant', () => {
  let server: Server;
  let port: number;
  beforeAll(async () => {
    server = createServer((req, res) => {
      if (req.url === '/redirect') {
        res.writeHead(302, { location: 'http://example.invalid/' }).end();
        return;
      }
      res
        .writeHead(200, { 'content-type': 'application/json' })
        .end(JSON.stringify({ city: 'Lyon', path: req.url }));
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    port = (server.address() as AddressInfo).port;
  });
  afterAll(() => new Promise<void>((r) => server.close(() => r())));

  it('an async function reaches the granted host only, within its time limit', async () => {
    const s = await sandbox(
      `export default async (e) => {
         console.log('lookup', e.n);
         if (e.n === 1) { const r = await fetch('http://127.0.0.1:${port}/geo?n=1'); return { ...e, geo: await r.json(), status: r.status }; }
         if (e.n === 2) { await fetch('http://localhost:${port}/'); return e; }
         if (e.n === 3) { const r = await fetch('http://127.0.0.1:${port}/redirect'); return { ...e, status: r.status }; }
         if (e.n === 4) await new Promise(() => {});
         if (e.n === 5) for (;;) await null;
         return e;
       }`,
      { network: ['127.0.0.1'], timeoutMs: 1000 },
    );
    const r = await s.run([{ n: 1 }, { n: 2 }, { n: 3 }, { n: 4 }, { n: 6 }]);
    expect(r[0]).toEqual({
      ok: true,
      events: [{ n: 1, geo: { city: 'Lyon', path: '/geo?n=1' }, status: 200 }],
      logs: ['log: lookup 1'],
    });
    expect(r[1]).toMatchObject({ ok: false, code: 'TRIB_ERR_TRANSFORM_THREW', logs: ['log: lookup 2'] });
    expect((r[1] as { message: string }).message).toContain('network access to localhost is not granted');
    expect(r[2]).toMatchObject({ ok: true, events: [{ n: 3, status: 302 }] });
    expect(r[3]).toMatchObject({ ok: false, code: 'TRIB_ERR_TRANSFORM_TIMEOUT', logs: ['log: lookup 4'] });
    expect(r[4]).toMatchObject({ ok: true, events: [{ n: 6 }] });
    const realm = await sandbox(
      `export default async () => {
         const probe = (f) => { try { return String(f()); } catch (e) { return 'error: ' + e.constructor.name; } };
         const pending = fetch('http://127.0.0.1:${port}/x');
         const res = await pending;
         let rejected;
         try { await fetch('http://denied.invalid/'); } catch (e) { rejected = e; }
         return {
           promise: pending instanceof Promise,
           response: res instanceof Object,
           error: rejected instanceof Error,
           escapes: [fetch, pending, res, res.json, rejected].map((o) => probe(() => o.constructor.constructor('return typeof process')())),
         };
       }`,
      { network: ['127.0.0.1'], timeoutMs: 2000 },
    );
    // Everything the bridge hands the function belongs to the engine: no constructor leads to the host.
    expect((await realm.run([{}]))[0]).toEqual({
      ok: true,
      events: [{ promise: true, response: true, error: true, escapes: Array(5).fill('undefined') }],
      logs: [],
    });

    // An endless chain of awaits never lets the worker's timer fire: the watchdog ends the worker.
    const hung = await s.run([{ n: 5 }]);
    expect(hung[0]).toMatchObject({ ok: false, code: 'TRIB_ERR_TRANSFORM_TIMEOUT' });
    expect(await s.run([{ n: 7 }])).toEqual([{ ok: true, events: [{ n: 7 }], logs: ['log: lookup 7'] }]);
  });
});

/** A file name the escape attempts below try to create with the host's `fs`. */
const pwned: string[] = [];
function pwnedPath(): string {
  const path = join(tmpdir(), `trib-sandbox-pwned-${process.pid}-${Math.random().toString(36).slice(2)}`);
  pwned.push(path);
  return path;
}
afterEach(() => {
  for (const path of pwned.splice(0)) rmSync(path, { force: true });
});

/**
 * Code that looks for host functions on the stack (V8's CallSite API) and, through the
 * constructor of any it finds, for `process`, then writes `path` with the host's `fs`.
 */
function climbOut(path: string): string {
  return `
    const frames = () => {
      const E = Error;
      const before = E.prepareStackTrace;
      E.prepareStackTrace = (_, cs) => cs;
      const stack = new E().stack;
      E.prepareStackTrace = before;
      return Array.isArray(stack) ? stack : [];
    };
    const pwn = (p) => { if (p && typeof p.getBuiltinModule === 'function') p.getBuiltinModule('fs').writeFileSync(${JSON.stringify(path)}, 'pwned'); };
    const climb = () => {
      for (const f of frames()) {
        const fn = typeof f.getFunction === 'function' ? f.getFunction() : undefined;
        if (typeof fn !== 'function') continue;
        try {
          const r = fn.constructor('return typeof process === "object" ? process : undefined')();
          if (r && typeof r.getBuiltinModule === 'function') pwn(r);
          else if (r && typeof r.then === 'function') r.then(pwn, () => {});
        } catch {}
      }
    };`;
}

describe('Sandbox boundary', () => {
  it('a getter on a thrown value reached by the host finds no host function to climb out through', async () => {
    const path = pwnedPath();
    const s = await sandbox(
      `module.exports = (e) => {
         ${climbOut(path)}
         const inner = {};
         Object.defineProperty(inner, 'code', { get() { climb(); return 'x'; } });
         Object.defineProperty(inner, 'message', { get() { climb(); return 'x'; } });
         const outer = {};
         Object.defineProperty(outer, 'stack', { get() { climb(); throw inner; } });
         Object.defineProperty(outer, 'message', { get() { climb(); throw inner; } });
         Object.defineProperty(outer, 'toString', { value() { climb(); throw inner; } });
         if (e.n === 1) throw outer;
         return { ...e, process: typeof process, require: typeof require };
       }`,
    );
    const r = await s.run([{ n: 1 }, { n: 2 }]);
    expect(existsSync(path)).toBe(false);
    expect(r[0]).toMatchObject({ ok: false });
    expect(r[1]).toEqual({
      ok: true,
      events: [{ n: 2, process: 'undefined', require: 'undefined' }],
      logs: [],
    });
  });

  it('a then getter on Object.prototype finds no host function when the fetch bridge answers', async () => {
    const server = createServer((_req, res) => res.writeHead(200).end('{"a":1}'));
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    const port = (server.address() as AddressInfo).port;
    const path = pwnedPath();
    try {
      const s = await sandbox(
        `export default async (e) => {
           ${climbOut(path)}
           let seen = 0;
           Object.defineProperty(Object.prototype, 'then', {
             configurable: true,
             get() { seen++; if (seen < 50) climb(); return undefined; },
           });
           const res = await fetch('http://127.0.0.1:${port}/');
           const body = await res.text();
           delete Object.prototype.then;
           return { ...e, body };
         }`,
        { network: ['127.0.0.1'], timeoutMs: 2000 },
      );
      const r = await s.run([{ n: 1 }, { n: 2 }]);
      expect(existsSync(path)).toBe(false);
      expect(r.map((x) => x.ok)).toEqual([true, true]);
    } finally {
      await new Promise<void>((r) => server.close(() => r()));
    }
  });

  it('ArrayBuffers and strings count against the memory limit: the event fails, the process keeps its memory', async () => {
    const s = await sandbox(
      `module.exports = (e) => {
         const keep = [];
         if (e.kind === 'buffers') for (let i = 0; i < 256; i++) keep.push(new Uint8Array(1024 * 1024).fill(1));
         if (e.kind === 'strings') for (let i = 0; i < 256; i++) keep.push(String(i).padEnd(1024 * 1024, 'x'));
         return { ...e, kept: keep.length };
       }`,
      { memoryMb: 32, timeoutMs: 30_000 },
    );
    const rss = process.memoryUsage().rss;
    const r = await s.run([{ kind: 'buffers' }, { kind: 'none' }, { kind: 'strings' }]);
    expect(r.map((x) => (x.ok ? 'ok' : x.code))).toEqual([
      'TRIB_ERR_TRANSFORM_MEMORY',
      'ok',
      'TRIB_ERR_TRANSFORM_MEMORY',
    ]);
    // 256 MB kept by either event would show here; the limit is 32 MB.
    expect(process.memoryUsage().rss - rss).toBeLessThan(200 * 1024 * 1024);
    expect(await s.run([{ kind: 'none' }])).toEqual([
      { ok: true, events: [{ kind: 'none', kept: 0 }], logs: [] },
    ]);
  });

  it('deep recursion and an output whose getter throws fail their event only', async () => {
    const s = await sandbox(
      `module.exports = (e) => {
         if (e.k === 'recurse') { const f = (n) => f(n + 1) + 1; return f(0); }
         if (e.k === 'getter') { const o = {}; Object.defineProperty(o, 'x', { enumerable: true, get() { throw new Error('no'); } }); return o; }
         return e;
       }`,
      { timeoutMs: 5000 },
    );
    const r = await s.run([{ k: 'recurse' }, { k: 'getter' }, { k: 'fine' }]);
    expect(r.slice(0, 2).map((x) => (x.ok ? 'ok' : x.code))).toEqual([
      'TRIB_ERR_TRANSFORM_THREW',
      'TRIB_ERR_TRANSFORM_BAD_OUTPUT',
    ]);
    expect((r[0] as { message: string }).message.split('\n').length).toBeLessThanOrEqual(21);
    expect(r[2]).toEqual({ ok: true, events: [{ k: 'fine' }], logs: [] });
  });

  it('a worker that stops answering is replaced: only its event fails, the others and the next batch pass', async () => {
    // BigInt's decimal conversion runs in one native call that no time limit inside the engine stops.
    const s = await sandbox(
      `module.exports = (e) => {
         if (e.hang) return { ...e, digits: (3n ** 600000n).toString().length };
         return e;
       }`,
      { timeoutMs: 100, hangGraceMs: 300 },
    );
    const r = await s.run([{ n: 1 }, { n: 2, hang: true }, { n: 3 }]);
    expect(r[0]).toEqual({ ok: true, events: [{ n: 1 }], logs: [] });
    expect(r[1]).toMatchObject({ ok: false, code: 'TRIB_ERR_TRANSFORM_UNRESPONSIVE' });
    expect(r[2]).toEqual({ ok: true, events: [{ n: 3 }], logs: [] });
    expect(await s.run([{ n: 4 }])).toEqual([{ ok: true, events: [{ n: 4 }], logs: [] }]);
  });
});
