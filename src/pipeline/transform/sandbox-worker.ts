/**
 * The code of a sandbox worker, as a string run with `new Worker(code, { eval: true })`
 * (one file whether the caller runs from TypeScript sources or the build).
 *
 * The user's function runs in QuickJS compiled to WebAssembly (quickjs-emscripten), not in
 * V8: it has no object, function or stack frame of Node's at all, only what QuickJS defines
 * and what the prelude below adds. Every allocation of the engine (objects, strings,
 * ArrayBuffers, its stack) lives in one `WebAssembly.Memory` whose maximum is the memory
 * limit; a deadline checked by QuickJS's interrupt handler stops a function that runs too
 * long. Values cross only as strings and numbers: an event goes in as JSON text parsed
 * inside QuickJS, the result comes out as the text of `JSON.stringify` run inside QuickJS,
 * and this thread never reads a property of a value made by the function. After a timeout,
 * a memory failure or an engine fault the whole engine is dropped and built again, so no
 * state of a failed event leaks into the next one.
 *
 * The worker marks the event it is running in `progress` ([0]: index, -1 when idle; [1]:
 * events started) so the main thread's watchdog sees one that never comes back.
 */
export const SANDBOX_WORKER_CODE = String.raw`
const { parentPort, workerData } = require('node:worker_threads');
const { readFileSync } = require('node:fs');
const { code, filename, timeoutMs, env, network, memoryBytes, corePath, variantPath, wasmPath, progress } = workerData;
const { newQuickJSWASMModuleFromVariant, newVariant } = require(corePath);
const baseVariant = require(variantPath).default;
const wasmModule = new WebAssembly.Module(readFileSync(wasmPath));
const state = new Int32Array(progress);
const PAGE = 65536;
const BODY_LIMIT = 1024 * 1024;
const FETCHES_PER_EVENT = 32;

// Runs inside QuickJS. Nothing here is a security boundary (the function can change any of
// it); it only shapes what one event's function hands back, as text.
const PRELUDE = ${'`'}
(function (envJson, hostFetch) {
  'use strict';
  const G = globalThis;
  const stringify = JSON.stringify;
  const parse = JSON.parse;
  const isArray = Array.isArray;
  const Str = String;
  const P = Promise;
  const MEMORY = 'TRIB_ERR_TRANSFORM_MEMORY';
  const logs = [];
  const text = (v) => {
    if (typeof v === 'string') return v;
    try { const s = stringify(v); return s === undefined ? Str(v) : s; } catch (e) { try { return Str(v); } catch (e2) { return '[unprintable]'; } }
  };
  const push = (level) => (...args) => {
    if (logs.length < 200) logs.push((level + ': ' + args.map(text).join(' ')).slice(0, 2000));
  };
  G.console = { log: push('log'), info: push('info'), warn: push('warn'), error: push('error'), debug: push('debug') };
  G.env = Object.freeze(parse(envJson));
  const oom = (e) => e instanceof InternalError && e.message === 'out of memory';
  const describe = (e) => {
    try { return (e instanceof Error ? Str(e) + '\\n' + Str(e.stack || '') : Str(e)).slice(0, 4000); }
    catch (x) { return oom(x) ? 'out of memory' : 'the function threw a value that cannot be printed'; }
  };
  const failure = (e) => ({ code: oom(e) ? MEMORY : 'TRIB_ERR_TRANSFORM_THREW', error: describe(e) });
  const outputs = (v) => ({ events: v === undefined || v === null ? [] : isArray(v) ? v : [v] });
  const thenable = (v) => v !== null && typeof v === 'object' && typeof v.then === 'function';
  const finish = (r) => {
    const l = logs.slice();
    try { return stringify({ code: r.code, error: r.error, events: r.events, logs: l }); }
    catch (e) {
      try { return stringify({ code: oom(e) ? MEMORY : 'TRIB_ERR_TRANSFORM_BAD_OUTPUT', error: 'the output is not JSON: ' + describe(e), logs: l }); }
      catch (e2) { return ''; }
    }
  };
  let fn;
  let result = '';
  const pending = new Map();
  if (hostFetch) {
    G.fetch = function (url, init) {
      return new P(function (resolve, reject) {
        const id = hostFetch(Str(url), stringify(init === undefined ? {} : init));
        pending.set(id, { resolve, reject });
      });
    };
  }
  return {
    load() {
      const m = G.__module;
      delete G.__module;
      const x = m && m.exports;
      fn = typeof x === 'function' ? x : x && x.default;
      return typeof fn;
    },
    describe,
    run(input) {
      logs.length = 0;
      let r;
      try {
        const v = fn(parse(input));
        r = thenable(v) ? { code: 'TRIB_ERR_TRANSFORM_ASYNC', error: 'the function returned a Promise; transformations are synchronous' } : outputs(v);
      } catch (e) {
        r = failure(e);
      }
      return finish(r);
    },
    start(input) {
      logs.length = 0;
      result = '';
      pending.clear();
      const done = (v) => { result = finish(outputs(v)); };
      const failed = (e) => { result = finish(failure(e)); };
      try {
        const v = fn(parse(input));
        if (thenable(v)) P.resolve(v).then(done, failed);
        else done(v);
      } catch (e) {
        failed(e);
      }
    },
    take() { const r = result; result = ''; return r; },
    logs() { return stringify(logs); },
    settle(id, error, status, headers, body) {
      const p = pending.get(id);
      if (!p) return;
      pending.delete(id);
      if (error !== '') { p.reject(new Error(error)); return; }
      p.resolve({
        ok: status >= 200 && status < 300,
        status,
        headers: parse(headers),
        text: () => P.resolve(body),
        json: () => P.resolve(body).then(parse),
      });
    },
  };
})
${'`'};

let engine;
let deadline = Infinity;
let interrupted = false;
/** Fetches of the event being run: id → promise of its answer. */
let fetches;
let nextFetch = 1;

/** A fresh engine: its own memory, runtime and context, the prelude and the user's module. */
async function build() {
  const memory = new WebAssembly.Memory({ initial: 256, maximum: Math.floor(memoryBytes / PAGE) });
  const mod = await newQuickJSWASMModuleFromVariant(newVariant(baseVariant, { wasmModule, wasmMemory: memory }));
  const rt = mod.newRuntime();
  rt.setMemoryLimit(memoryBytes);
  rt.setMaxStackSize(256 * 1024);
  rt.setInterruptHandler(() => {
    if (Date.now() <= deadline) return false;
    interrupted = true;
    return true;
  });
  const ctx = rt.newContext();
  const e = { rt, ctx, memory, api: {} };
  const prelude = ctx.evalCode(PRELUDE, '<sandbox>');
  const hostFetch = network ? ctx.newFunction('fetch', (url, init) => ctx.newNumber(startFetch(ctx, url, init))) : ctx.undefined;
  const made = ctx.callFunction(ctx.unwrapResult(prelude), ctx.undefined, ctx.newString(JSON.stringify(env)), hostFetch);
  const api = ctx.unwrapResult(made);
  for (const name of ['load', 'describe', 'run', 'start', 'take', 'logs', 'settle']) e.api[name] = ctx.getProp(api, name);
  deadline = Date.now() + timeoutMs;
  try {
    const loaded = ctx.evalCode(
      'globalThis.__module = { exports: {} };\n(function (module, exports) {\n' + code + '\n})(__module, __module.exports);',
      filename,
    );
    if (loaded.error) throw new Error(interrupted ? 'the file ran longer than ' + timeoutMs + ' ms when loaded' : call(e, 'describe', loaded.error) || 'the file failed to load');
    if (call(e, 'load') !== 'function') throw new Error('the file must export a function (export default function (event) { … })');
  } finally {
    deadline = Infinity;
  }
  return e;
}

/** Calls a prelude function with string/number/handle arguments; its answer if it is a string, else undefined. */
function call(e, name, ...args) {
  const { ctx } = e;
  const made = [];
  const handles = args.map((a) => {
    if (typeof a !== 'string' && typeof a !== 'number') return a;
    const h = typeof a === 'string' ? ctx.newString(a) : ctx.newNumber(a);
    made.push(h);
    return h;
  });
  const r = ctx.callFunction(e.api[name], ctx.undefined, ...handles);
  for (const h of made) h.dispose();
  if (r.error) {
    r.error.dispose();
    return undefined;
  }
  const out = ctx.typeof(r.value) === 'string' ? ctx.getString(r.value) : undefined;
  r.value.dispose();
  return out;
}

/** The log lines of the event that was stopped, read with a short deadline of their own. */
function stoppedLogs(e) {
  interrupted = false;
  deadline = Date.now() + 100;
  try {
    const lines = JSON.parse(call(e, 'logs') ?? '[]');
    return Array.isArray(lines) ? lines.filter((l) => typeof l === 'string') : [];
  } catch {
    return [];
  } finally {
    deadline = Infinity;
  }
}

/** What an error that left the prelude means: a deadline, a full memory, or a broken engine. */
function escaped(e) {
  engine = undefined;
  if (interrupted) return { code: 'TRIB_ERR_TRANSFORM_TIMEOUT', error: 'the function ran longer than ' + timeoutMs + ' ms', logs: stoppedLogs(e) };
  if (e.memory.buffer.byteLength >= memoryBytes * 0.75)
    return { code: 'TRIB_ERR_TRANSFORM_MEMORY', error: 'the function used more than its ' + memoryBytes / 1048576 + ' MB', logs: [] };
  return { code: 'TRIB_ERR_TRANSFORM_CRASHED', error: 'the function broke the engine', logs: [] };
}

/** Runs one event of a synchronous function. */
function runOne(e, input) {
  interrupted = false;
  deadline = Date.now() + timeoutMs;
  try {
    const arg = e.ctx.newString(input);
    const r = e.ctx.callFunction(e.api.run, e.ctx.undefined, arg);
    arg.dispose();
    if (r.error) {
      r.error.dispose();
      return escaped(e);
    }
    const out = e.ctx.typeof(r.value) === 'string' ? e.ctx.getString(r.value) : '';
    r.value.dispose();
    return answer(e, out);
  } finally {
    deadline = Infinity;
  }
}

/** The prelude's text for one event; a memory failure inside it still drops the engine. */
function answer(e, out) {
  // A deadline that struck inside a promise job can come back as a rejection the function saw.
  if (interrupted) return escaped(e);
  if (out === '' || out.startsWith('{"code":"TRIB_ERR_TRANSFORM_MEMORY"')) engine = undefined;
  if (out === '') return { code: 'TRIB_ERR_TRANSFORM_MEMORY', error: 'the function used more than its ' + memoryBytes / 1048576 + ' MB', logs: [] };
  return { out };
}

/**
 * Starts a granted request for the function; its answer is handed back as strings and a
 * number by the loop in runAsync. Only granted host names, no redirects, bodies cut at 1 MB.
 */
function startFetch(ctx, urlHandle, initHandle) {
  const id = nextFetch++;
  const url = ctx.typeof(urlHandle) === 'string' ? ctx.getString(urlHandle) : '';
  const initJson = initHandle !== undefined && ctx.typeof(initHandle) === 'string' ? ctx.getString(initHandle) : '{}';
  if (!fetches) return id;
  const failed = (message) => Promise.resolve({ id, error: message, status: 0, headers: '{}', body: '' });
  if (fetches.size >= FETCHES_PER_EVENT) {
    fetches.set(id, failed('fetch: more than ' + FETCHES_PER_EVENT + ' requests for one event'));
    return id;
  }
  let u;
  let init;
  try {
    u = new URL(url);
    init = JSON.parse(initJson);
  } catch {
    fetches.set(id, failed('fetch: invalid URL or options'));
    return id;
  }
  if (!network.includes(u.hostname)) {
    fetches.set(id, failed('fetch: network access to ' + u.hostname + ' is not granted'));
    return id;
  }
  const headers = {};
  if (init && typeof init.headers === 'object' && init.headers !== null)
    for (const [k, v] of Object.entries(init.headers)) if (typeof v === 'string') headers[k] = v;
  const signal = fetches.signal;
  fetches.set(
    id,
    fetch(u, {
      method: init && typeof init.method === 'string' ? init.method : 'GET',
      headers,
      body: init && typeof init.body === 'string' ? init.body : undefined,
      redirect: 'manual',
      signal,
    })
      .then(async (res) => ({ id, error: '', status: res.status, headers: JSON.stringify(Object.fromEntries(res.headers)), body: await cappedText(res) }))
      .catch((err) => ({ id, error: 'fetch: ' + String((err && err.message) || err), status: 0, headers: '{}', body: '' })),
  );
  return id;
}

async function cappedText(res) {
  if (!res.body) return '';
  const reader = res.body.getReader();
  const chunks = [];
  let size = 0;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    chunks.push(value);
    size += value.byteLength;
    if (size >= BODY_LIMIT) {
      await reader.cancel();
      break;
    }
  }
  return Buffer.concat(chunks).subarray(0, BODY_LIMIT).toString('utf8');
}

/** Runs one event of a function that may await granted fetches, within its time limit. */
async function runAsync(e, input) {
  const end = Date.now() + timeoutMs;
  const abort = new AbortController();
  fetches = new Map();
  fetches.signal = abort.signal;
  const timedOut = () => ({ code: 'TRIB_ERR_TRANSFORM_TIMEOUT', error: 'the function ran longer than ' + timeoutMs + ' ms', logs: stoppedLogs(e) });
  try {
    interrupted = false;
    deadline = end;
    const arg = e.ctx.newString(input);
    const started = e.ctx.callFunction(e.api.start, e.ctx.undefined, arg);
    arg.dispose();
    if (started.error) {
      started.error.dispose();
      return escaped(e);
    }
    started.value.dispose();
    for (;;) {
      interrupted = false;
      deadline = end;
      const jobs = e.rt.executePendingJobs();
      if (jobs.error) {
        jobs.error.dispose();
        return escaped(e);
      }
      const out = call(e, 'take');
      deadline = Infinity;
      if (out !== undefined && out !== '') return answer(e, out);
      if (fetches.size === 0) {
        engine = undefined;
        return { code: 'TRIB_ERR_TRANSFORM_TIMEOUT', error: 'the function awaits something that never settles', logs: stoppedLogs(e) };
      }
      const left = end - Date.now();
      let timer;
      const next = await Promise.race([
        ...fetches.values(),
        new Promise((resolve) => { timer = setTimeout(() => resolve(undefined), Math.max(0, left)); }),
      ]);
      clearTimeout(timer);
      if (next === undefined) {
        engine = undefined;
        return timedOut();
      }
      fetches.delete(next.id);
      deadline = end;
      const args = [
        e.ctx.newNumber(next.id),
        e.ctx.newString(next.error),
        e.ctx.newNumber(next.status),
        e.ctx.newString(next.headers),
        e.ctx.newString(next.body),
      ];
      const settled = e.ctx.callFunction(e.api.settle, e.ctx.undefined, ...args);
      for (const h of args) h.dispose();
      if (settled.error) {
        settled.error.dispose();
        return escaped(e);
      }
      settled.value.dispose();
    }
  } finally {
    deadline = Infinity;
    fetches = undefined;
    abort.abort();
  }
}

async function runBatch(inputs) {
  const results = [];
  for (let i = 0; i < inputs.length; i++) {
    Atomics.store(state, 0, i);
    Atomics.add(state, 1, 1);
    let r;
    try {
      if (!engine) {
        // Building runs the module's top level under its own time limit: a window of its own.
        engine = await build();
        Atomics.add(state, 1, 1);
      }
      r = network ? await runAsync(engine, inputs[i]) : runOne(engine, inputs[i]);
    } catch (err) {
      // A fault of the engine itself (a trap, the thread's own stack): start over with a new one.
      engine = undefined;
      r = { code: 'TRIB_ERR_TRANSFORM_CRASHED', error: 'the engine failed: ' + String((err && err.message) || err), logs: [] };
    }
    r.i = i;
    results.push(r);
  }
  Atomics.store(state, 0, -1);
  return results;
}

// Node loads its fetch on first use, which takes a good part of a short time limit: do it now.
if (network) new Request('http://localhost/');

let queue = build().then(
  (e) => {
    engine = e;
    parentPort.postMessage({ type: 'ready' });
  },
  (err) => parentPort.postMessage({ type: 'init-error', message: String((err && err.message) || err) }),
);

parentPort.on('message', (m) => {
  queue = queue.then(() =>
    runBatch(m.inputs).then(
      (results) => parentPort.postMessage({ type: 'done', id: m.id, results }),
      (err) => parentPort.postMessage({ type: 'crash', id: m.id, message: String((err && err.message) || err) }),
    ),
  );
});
`;
