/**
 * A process that runs one reverse-ETL model on a DuckDB file and posts to a receiver, for the
 * kill -9 test (`./reverse-etl-crash.test.ts`): argv file, receiver URL.
 */
import { DuckDBInstance } from '@duckdb/node-api';
import { runModel } from '../../src/destinations/reverse-etl/model-sync.js';
import { ModelConfig } from '../../src/destinations/reverse-etl/spec.js';
import type { SendResult } from '../../src/destinations/stream.js';
import { DuckDBModelStore } from '../../src/store/duckdb/duckdb-model-store.js';

const [file, url] = process.argv.slice(2) as [string, string];
const MODEL = {
  id: 'crm-sync',
  sql: 'SELECT id, email FROM customers',
  primaryKey: 'id',
  destination: 'crm',
  batchSize: 50,
};
const instance = await DuckDBInstance.create(file);
const store = await DuckDBModelStore.open(instance);
await runModel(
  ModelConfig.parse(MODEL),
  {
    store,
    commitEvery: 100,
    openDestination: async (id) => ({
      id,
      async send(batch, signal) {
        const res = await fetch(url, { method: 'POST', body: JSON.stringify(batch), signal });
        return (await res.json()) as SendResult[];
      },
      async close() {},
    }),
  },
  'test',
);
process.stdout.write('finished\n');
