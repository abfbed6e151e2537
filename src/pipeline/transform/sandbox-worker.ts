/**
 * The code of a sandbox worker, as a string run with `new Worker(code, { eval: true })`
 * (one file whether the caller runs from TypeScript sources or the build).
 *
 * The user's function runs in a `vm` context of its own: no `require`, `process`, `fetch`,
 * timers or host objects. Nothing crosses between the context and this thread but strings
 * and numbers (events go in and come out as JSON text), so the function never holds an
 * object of the worker's realm to climb out through. The worker itself runs with an empty
 * environment and a heap limit.
 */
export const SANDBOX_WORKER_CODE = String.raw`
const { parentPort, workerData } = require('node:worker_threads');
const vm = require('node:vm');
const { code, filename, timeoutMs, env, network } = workerData;

const ctx = vm.createContext({}, { name: filename, codeGeneration: { strings: false, wasm: false } });
const PRELUDE = ${'`'}
(function () {
  const logs = [];
  const text = (v) => {
    if (typeof v === 'string') return v;
    try { return JSON.stringify(v) ?? String(v); } catch { return String(v); }
  };
  const push = (level) => (...args) => {
    if (logs.length < 200) logs.push((level + ': ' + args.map(text).join(' ')).slice(0, 2000));
  };
  globalThis.console = { log: push('log'), info: push('info'), warn: push('warn'), error: push('error'), debug: push('debug') };
  globalThis.__logs = logs;
  globalThis.__acc = '';
  globalThis.__current = -1;
  globalThis.__runBatch = function (input, start, budgetMs, fn) {
    const events = JSON.parse(input);
    const t0 = Date.now();
    let acc = '';
    for (let i = start; i < events.length; i++) {
      if (i > start && Date.now() - t0 > budgetMs) break;
      globalThis.__current = i;
      logs.length = 0;
      let r;
      try {
        const v = fn(events[i]);
        if (v !== null && typeof v === 'object' && typeof v.then === 'function') {
          r = { i, code: 'TRIB_ERR_TRANSFORM_ASYNC', error: 'the function returned a Promise; transformations are synchronous', logs };
        } else {
          r = { i, events: v === undefined || v === null ? [] : Array.isArray(v) ? v : [v], logs };
        }
      } catch (e) {
        r = { i, code: 'TRIB_ERR_TRANSFORM_THREW', error: String((e && e.stack) || e), logs };
      }
      let line;
      try {
        line = JSON.stringify(r);
      } catch (e) {
        line = JSON.stringify({ i, code: 'TRIB_ERR_TRANSFORM_BAD_OUTPUT', error: 'the output is not JSON: ' + String(e), logs });
      }
      acc += (acc === '' ? '' : '\\n') + line;
      globalThis.__acc = acc;
    }
    globalThis.__current = -1;
    return acc;
  };
})();
${'`'};


// A fetch for the function, made in the context from a host function it keeps in a closure:
// the function only ever holds objects of its own realm, and the host side only hands it
// strings and numbers, through callbacks. Only hosts the configuration grants are reached;
// redirects are not followed (one could lead elsewhere); bodies are cut at 1 MB.
const FETCH_BRIDGE = ${'`'}
(function (hostFetch) {
  globalThis.fetch = function (url, init) {
    return new Promise(function (resolve, reject) {
      hostFetch(String(url), JSON.stringify(init === undefined ? {} : init), function (error, status, headers, body) {
        if (error !== '') { reject(new Error(error)); return; }
        resolve({
          ok: status >= 200 && status < 300,
          status: status,
          headers: JSON.parse(headers),
          text: function () { return Promise.resolve(body); },
          json: function () { return Promise.resolve(JSON.parse(body)); },
        });
      });
    });
  };
})
${'`'};

function hostFetch(url, initJson, done) {
  const fail = (message) => done(message, 0, '', '');
  let u;
  let init;
  try {
    u = new URL(url);
    init = JSON.parse(initJson);
  } catch {
    fail('fetch: invalid URL or options');
    return;
  }
  if (!network.includes(u.hostname)) {
    fail('fetch: network access to ' + u.hostname + ' is not granted');
    return;
  }
  const headers = init && typeof init.headers === 'object' && init.headers !== null ? init.headers : undefined;
  fetch(u, {
    method: typeof init.method === 'string' ? init.method : 'GET',
    headers,
    body: typeof init.body === 'string' ? init.body : undefined,
    redirect: 'manual',
    signal: AbortSignal.timeout(timeoutMs),
  })
    .then(async (res) => {
      const body = (await res.text()).slice(0, 1024 * 1024);
      done('', res.status, JSON.stringify(Object.fromEntries(res.headers)), body);
    })
    .catch((e) => fail('fetch: ' + String((e && e.message) || e)));
}

function fail(message) {
  parentPort.postMessage({ type: 'init-error', message });
}

try {
  vm.runInContext(PRELUDE, ctx);
  vm.runInContext('globalThis.env = Object.freeze(JSON.parse(' + JSON.stringify(JSON.stringify(env)) + '));', ctx);
  if (network) vm.runInContext(FETCH_BRIDGE, ctx)(hostFetch);
  vm.runInContext(
    'globalThis.__module = { exports: {} };\n(function (module, exports) {\n' + code + '\n})(__module, __module.exports);\n' +
      "globalThis.__fn = typeof __module.exports === 'function' ? __module.exports : __module.exports.default;",
    ctx,
    { filename, timeout: timeoutMs },
  );
  if (vm.runInContext('typeof __fn', ctx) !== 'function') fail('the file must export a function (export default function (event) { … })');
  else parentPort.postMessage({ type: 'ready' });
} catch (e) {
  fail(String((e && e.message) || e));
}

const call = new vm.Script('__runBatch(__in, __start, __budget, __fn)');
const readLogs = () => {
  try {
    return JSON.parse(vm.runInContext('JSON.stringify(__logs)', ctx, { timeout: 100 }));
  } catch {
    return [];
  }
};
const parse = (acc) => (acc === '' ? [] : acc.split('\n').map((l) => JSON.parse(l)));

/** Runs events [from, n), each given the full time limit: a call stops taking new events after half of it. */
function runAll(input, n) {
  const results = [];
  let start = 0;
  while (start < n) {
    ctx.__in = input;
    ctx.__start = start;
    ctx.__budget = timeoutMs / 2;
    ctx.__acc = '';
    try {
      const out = parse(call.runInContext(ctx, { timeout: timeoutMs }));
      results.push(...out);
      start = out[out.length - 1].i + 1;
    } catch (e) {
      if (!e || e.code !== 'ERR_SCRIPT_EXECUTION_TIMEOUT') throw e;
      const done = parse(ctx.__acc);
      results.push(...done);
      const culprit = ctx.__current;
      if (culprit === start) {
        results.push({ i: culprit, code: 'TRIB_ERR_TRANSFORM_TIMEOUT', error: 'the function ran longer than ' + timeoutMs + ' ms', logs: readLogs() });
        start = culprit + 1;
      } else {
        // It started late in the call: run it again first, with the whole limit.
        start = culprit;
      }
    }
  }
  return results;
}

// With network access a function may be async: events run one at a time, each awaited with
// the time limit (the main thread's watchdog catches a function that never yields).
const ASYNC_ONE = ${'`'}
(function (settle) {
  return function (input, fn) {
    __logs.length = 0;
    const stringify = (r) => {
      try { return JSON.stringify(r); }
      catch (e) { return JSON.stringify({ code: 'TRIB_ERR_TRANSFORM_BAD_OUTPUT', error: 'the output is not JSON: ' + String(e), logs: __logs }); }
    };
    const done = (v) => settle(stringify({ events: v === undefined || v === null ? [] : Array.isArray(v) ? v : [v], logs: __logs }));
    const failed = (e) => settle(stringify({ code: 'TRIB_ERR_TRANSFORM_THREW', error: String((e && e.stack) || e), logs: __logs }));
    let v;
    try { v = fn(JSON.parse(input)); } catch (e) { failed(e); return; }
    if (v !== null && typeof v === 'object' && typeof v.then === 'function') v.then(done, failed);
    else done(v);
  };
})
${'`'};
let makeOne;
function runAsync(input) {
  const events = JSON.parse(input);
  return events.reduce(
    (chain, event, i) =>
      chain.then(async (results) => {
        let timer;
        const settled = new Promise((resolve) => {
          makeOne ??= vm.runInContext(ASYNC_ONE, ctx);
          const runOne = makeOne((json) => resolve(json));
          try {
            ctx.__one = JSON.stringify(event);
            ctx.__runOne = runOne;
            vm.runInContext('__runOne(__one, __fn)', ctx, { timeout: timeoutMs });
          } catch (e) {
            resolve(JSON.stringify({ code: e && e.code === 'ERR_SCRIPT_EXECUTION_TIMEOUT' ? 'TRIB_ERR_TRANSFORM_TIMEOUT' : 'TRIB_ERR_TRANSFORM_THREW', error: e && e.code === 'ERR_SCRIPT_EXECUTION_TIMEOUT' ? 'the function ran longer than ' + timeoutMs + ' ms' : String(e), logs: readLogs() }));
          }
        });
        const timeout = new Promise((resolve) => {
          timer = setTimeout(() => resolve(JSON.stringify({ code: 'TRIB_ERR_TRANSFORM_TIMEOUT', error: 'the function ran longer than ' + timeoutMs + ' ms', logs: readLogs() })), timeoutMs);
        });
        const r = JSON.parse(await Promise.race([settled, timeout]));
        clearTimeout(timer);
        results.push({ i, ...r });
        return results;
      }),
    Promise.resolve([]),
  );
}

parentPort.on('message', (m) => {
  const reply = (results) => parentPort.postMessage({ type: 'done', id: m.id, results });
  const crash = (e) => parentPort.postMessage({ type: 'crash', id: m.id, message: String((e && e.message) || e) });
  try {
    if (network) runAsync(m.input).then(reply, crash);
    else reply(runAll(m.input, m.n));
  } catch (e) {
    crash(e);
  }
});
`;
