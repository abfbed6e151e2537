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
const { code, filename, timeoutMs, env } = workerData;

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

function fail(message) {
  parentPort.postMessage({ type: 'init-error', message });
}

try {
  vm.runInContext(PRELUDE, ctx);
  vm.runInContext('globalThis.env = Object.freeze(JSON.parse(' + JSON.stringify(JSON.stringify(env)) + '));', ctx);
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

parentPort.on('message', (m) => {
  try {
    parentPort.postMessage({ type: 'done', id: m.id, results: runAll(m.input, m.n) });
  } catch (e) {
    parentPort.postMessage({ type: 'crash', id: m.id, message: String((e && e.message) || e) });
  }
});
`;
