import { describe, expect, it } from 'vitest';
import { parseConfig } from '../config/load.js';
import { loadConnector, SOURCE_KINDS } from './registry.js';

const problems = (yaml: string): string => {
  try {
    parseConfig(yaml, {});
    return '';
  } catch (err) {
    return (err as Error).message;
  }
};

describe('the source registry and sources: in the configuration', () => {
  it('keeps http sources as they were and reads file sources with their streams', () => {
    const { config } = parseConfig(
      `version: 1
sources:
  - {id: web, type: http, writeKey: wk_1}
  - id: helpdesk
    type: file
    schedule: "*/15 * * * *"
    streams:
      - name: tickets
        path: data/tickets-*.csv.gz
        delimiter: ";"
        primaryKey: [id]
        events: {type: track, event: Ticket Opened, userId: requester}
        identifiers: {email: requester_email}
`,
      {},
    );
    expect(config.sources[0]).toMatchObject({ id: 'web', type: 'http', writeKey: 'wk_1', enabled: true });
    expect(config.sources[1]).toMatchObject({
      id: 'helpdesk',
      type: 'file',
      retries: 3,
      streams: [
        {
          name: 'tickets',
          syncMode: 'incremental',
          objects: true,
          header: true,
          events: [{ type: 'track', event: 'Ticket Opened', userId: 'requester' }],
        },
      ],
    });
  });

  it('reports an unknown kind, a stream without identity and an http source without a write key', () => {
    expect(problems('version: 1\nsources:\n  - {id: a, type: ftp}\n')).toMatch(/sources\[0\]\.type/);
    expect(
      problems(
        'version: 1\nsources:\n  - id: f\n    type: file\n    streams:\n      - {name: s, events: {type: track, event: E}}\n',
      ),
    ).toMatch(/userId or anonymousId/);
    expect(problems('version: 1\nsources:\n  - {id: a, type: http}\n')).toMatch(/sources\[0\]\.writeKey/);
  });

  it('has one entry per kind; pull kinds load a connector of their type', async () => {
    expect(SOURCE_KINDS.map((k) => k.type)).toEqual(['http', 'webhook', 'file', 'postgres', 'mysql']);
    expect(await loadConnector('webhook')).toBeUndefined();
    expect(await loadConnector('http')).toBeUndefined();
    for (const t of ['file', 'postgres', 'mysql']) expect((await loadConnector(t))?.type).toBe(t);
  });

  it('reads database sources: streams with what rows become, full_refresh by default, unknown keys refused', () => {
    const { config } = parseConfig(
      `version: 1
sources:
  - id: crm
    type: postgres
    connectionString: postgres://reader:\${CRM_PASSWORD}@crm-db:5432/crm
    schedule: "0 * * * *"
    streams:
      - name: contacts
        table: public.contacts
        identifiers: {email: email, crm_id: crm_id}
      - {name: recent, query: "SELECT * FROM orders", syncMode: incremental, cursorField: updated_at, primaryKey: [id]}
  - {id: shop, type: mysql, host: shop-db, database: shop, user: reader, password: "\${SHOP_PASSWORD}", streams: [{name: orders, table: shop.orders}]}
`,
      { CRM_PASSWORD: 'x', SHOP_PASSWORD: 'y' },
    );
    expect(config.sources[0]).toMatchObject({
      id: 'crm',
      type: 'postgres',
      enabled: true,
      retries: 3,
      port: 5432,
      schedule: '0 * * * *',
      streams: [
        { name: 'contacts', syncMode: 'full_refresh', primaryKey: [], objects: true, events: [] },
        { name: 'recent', syncMode: 'incremental', cursorField: 'updated_at', primaryKey: ['id'] },
      ],
    });
    expect(config.sources[1]).toMatchObject({ type: 'mysql', port: 3306, password: 'y' });
    const db = (stream: string) =>
      problems(`version: 1\nsources:\n  - {id: d, type: postgres, host: h, streams: [${stream}]}\n`);
    expect(db('{name: s, table: t, colour: red}')).toMatch(/colour/);
    expect(db('{name: s}')).toMatch(/table or query/);
    expect(db('{name: s, table: t, syncMode: incremental}')).toMatch(/cursorField/);
    expect(db('{name: Bad-Name, table: t}')).toMatch(/lowercase/);
    expect(problems('version: 1\nsources:\n  - {id: d, type: mysql, host: h, streams: []}\n')).toMatch(
      /streams/,
    );
  });
});
