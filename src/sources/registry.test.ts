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
    expect(SOURCE_KINDS.map((k) => k.type)).toEqual(['http', 'webhook', 'file']);
    expect(await loadConnector('webhook')).toBeUndefined();
    expect(await loadConnector('http')).toBeUndefined();
    expect((await loadConnector('file'))?.type).toBe('file');
  });
});
