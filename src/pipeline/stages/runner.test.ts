import { describe, expect, it } from 'vitest';
import { MappingConfig } from '../../config/quality-schema.js';
import type { Delivered } from '../../log/event-log.js';
import { MappingStage } from './mapping-stage.js';
import { runStages } from './runner.js';
import type { Stage } from './stage.js';

const rec = (offset: number, json: string): Delivered => ({
  offset,
  sourceId: 'web',
  messageId: `m${offset}`,
  receivedAt: 0,
  status: 'accepted',
  json,
});

const mapping = new MappingStage(MappingConfig.parse({ events: { aliases: { 'Logged In': ['log_in'] } } }));

describe('runStages', () => {
  it('stores an event no stage changed as the log holds it, and re-serialises a changed one', async () => {
    const same = '{"type":"track", "event":"Signed Up", "messageId":"m1"}';
    const renamed = '{"type":"track", "event":"log_in", "messageId":"m2"}';
    const run = await runStages([mapping], [rec(1, same), rec(2, renamed)]);
    expect(run.rows.map((r) => r.json)).toEqual([
      same,
      JSON.stringify({
        type: 'track',
        event: 'Logged In',
        messageId: 'm2',
        _tributary: { mapped: [{ field: 'event', op: 'rename_event', from: 'log_in', to: 'Logged In' }] },
      }),
    ]);
    expect(run.outcomes).toEqual([
      { stage: 'load', outcome: 'passed', offset: 1 },
      { stage: 'load', outcome: 'passed', offset: 2 },
    ]);
  });

  it('fails a payload that is not JSON, and every event of a stage that throws, without stopping', async () => {
    const broken: Stage = {
      name: 'broken',
      run() {
        throw new Error('bug');
      },
    };
    const run = await runStages(
      [broken],
      [rec(1, '{"type":"track","event":"A","messageId":"m1"}'), rec(2, '{nope')],
    );
    expect(run.rows).toEqual([]);
    expect(run.failed.map((f) => [f.logOffset, f.stage, f.code])).toEqual([
      [2, 'pipeline', 'TRIB_ERR_PIPELINE_BAD_PAYLOAD'],
      [1, 'broken', 'TRIB_ERR_PIPELINE_STAGE_ERROR'],
    ]);
    expect(run.failed[1]!.reason).toBe('stage broken failed: bug');
    expect(run.failed[0]!.json).toBe('"{nope"');
    expect(run.outcomes).toEqual([
      { stage: 'broken', outcome: 'failed', offset: 1 },
      { stage: 'pipeline', outcome: 'failed', offset: 2 },
    ]);
  });
});
