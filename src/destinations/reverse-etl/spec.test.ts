import { describe, expect, it } from 'vitest';
import { parseConfig } from '../../config/load.js';
import { ModelConfig, ModelList } from './spec.js';

const base = { id: 'm', sql: 'SELECT 1 AS id', primaryKey: 'id', destination: 'crm' };

describe('models: in the configuration', () => {
  it('fills the defaults and takes a key column as a list', () => {
    expect(ModelConfig.parse(base)).toMatchObject({
      primaryKey: ['id'],
      syncMode: 'upsert',
      enabled: true,
      batchSize: 500,
      timeout: 30_000,
      queryTimeout: 600_000,
    });
    expect(ModelConfig.parse({ ...base, every: '15m' }).every).toBe(900_000);
  });

  it('refuses a bad cron, schedule with every, a mapping that is a value and an object, a repeated id', () => {
    const issues = (v: unknown) =>
      ModelList.safeParse(v).error?.issues.map((i) => `${i.path.join('.')}: ${i.message}`);
    expect(issues([{ ...base, schedule: 'every day' }])?.[0]).toMatch(/^0\.schedule: /);
    expect(issues([{ ...base, schedule: '* * * * *', every: '1m' }])).toEqual([
      '0.every: give schedule or every, not both',
    ]);
    expect(issues([{ ...base, mapping: { a: 'traits', b: 'traits.email' } }])?.[0]).toMatch(
      /^0\.mapping: .*traits/,
    );
    expect(issues([base, base])).toEqual(['1.id: duplicate model id "m"']);
    expect(issues([{ ...base, syncMode: 'merge' }])?.[0]).toMatch(/^0\.syncMode/);
    expect(issues([{ ...base, primaryKey: [] }])?.[0]).toMatch(/^0\.primaryKey/);
  });

  it('is a top-level list of the configuration file', () => {
    const { config } = parseConfig(
      `version: 1
sources: [{ id: web, type: http, writeKey: k }]
models:
  - { id: m, sql: SELECT 1 AS id, primaryKey: id, destination: crm, syncMode: mirror }
`,
      {},
    );
    expect(config.models).toHaveLength(1);
    expect(config.models[0]).toMatchObject({ id: 'm', syncMode: 'mirror' });
    expect(
      parseConfig('version: 1\nsources: [{ id: web, type: http, writeKey: k }]\n', {}).config.models,
    ).toEqual([]);
  });
});
