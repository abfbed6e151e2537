/**
 * Diagnostic preload: how long the event loop spends inside DuckDB's synchronous calls
 * (appender appends and flushes, the synchronous part of `run`, parameter binding), which a
 * CPU profile does not separate from the JavaScript that calls them. Load it into the server
 * the ingest benchmark starts (which runs in a temporary folder: give absolute paths):
 *
 *   BENCH_SCENARIOS=single DUCKDB_SYNC_TIME_OUT=$PWD/duckdb-sync-time.json \
 *     BENCH_SERVER_NODE_ARGS="--import $PWD/bench/duckdb-sync-time.mjs" npm run bench:ingest
 *
 * On exit the server writes the calls, total and longest milliseconds per method to
 * DUCKDB_SYNC_TIME_OUT (default `duckdb-sync-time.json` in its working directory).
 */
import { writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';

const api = createRequire(import.meta.url)('@duckdb/node-api');
const stats = {};

function timed(proto, method, label) {
  const original = proto[method];
  proto[method] = function (...args) {
    const start = process.hrtime.bigint();
    try {
      return original.apply(this, args);
    } finally {
      const ms = Number(process.hrtime.bigint() - start) / 1e6;
      stats[label] ??= { calls: 0, totalMs: 0, over1Ms: 0, maxMs: 0 };
      const s = stats[label];
      s.calls++;
      s.totalMs += ms;
      if (ms > 1) s.over1Ms++;
      if (ms > s.maxMs) s.maxMs = ms;
    }
  };
}

timed(api.DuckDBAppender.prototype, 'appendVarchar', 'appender.appendVarchar');
timed(api.DuckDBAppender.prototype, 'flushSync', 'appender.flushSync');
timed(api.DuckDBPreparedStatement.prototype, 'bindVarchar', 'prepared.bindVarchar');
timed(api.DuckDBPreparedStatement.prototype, 'run', 'prepared.run (until its first await)');
timed(api.DuckDBConnection.prototype, 'run', 'connection.run (until its first await)');

const started = Date.now();
process.on('exit', () => {
  const out = process.env.DUCKDB_SYNC_TIME_OUT ?? 'duckdb-sync-time.json';
  writeFileSync(out, `${JSON.stringify({ wallMs: Date.now() - started, stats }, null, 2)}\n`);
});
