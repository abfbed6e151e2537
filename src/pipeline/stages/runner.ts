import type { Delivered } from '../../log/event-log.js';
import { isPlainObject, type SegmentEvent } from '../../spec/event.js';
import type { EventRow, FailedRow } from '../../store/store.js';
import type { Fate, PipelineEvent, Stage } from './stage.js';

/** The fate of one accepted record, as the reconciled counts report it. */
export type StageOutcome = 'passed' | 'blocked' | 'failed' | 'filtered' | 'deduplicated';

export interface StagesRun {
  rows: EventRow[];
  failed: FailedRow[];
  /** One per record: where it ended and how. */
  outcomes: { stage: string; outcome: StageOutcome; offset: number }[];
}

/**
 * Runs one source's records through its stages in order. Every record leaves with one
 * outcome: `passed` when at least one event it became reaches `events`; otherwise the
 * first failure or block (stored in `failed_events` with the payload as it entered the
 * stages, so a retry re-runs every rule), or `filtered` when a function returned nothing.
 * A stage that throws fails the events it was given; it never stops the loader.
 */
export async function runStages(stages: readonly Stage[], records: readonly Delivered[]): Promise<StagesRun> {
  const out: StagesRun = { rows: [], failed: [], outcomes: [] };
  const ended = new Map<number, { stage: string; outcome: StageOutcome }>();
  const byOffset = new Map<number, Delivered>();
  const fail = (f: Fate, payload?: string) => {
    out.failed.push(toStageFailedRow(f, payload));
    if (!ended.has(f.record.offset)) ended.set(f.record.offset, { stage: f.stage, outcome: f.kind });
  };

  let current: PipelineEvent[] = [];
  for (const r of records) {
    byOffset.set(r.offset, r);
    let event: unknown;
    try {
      event = JSON.parse(r.json);
    } catch (err) {
      event = undefined;
      // Kept as a JSON string: the payload column only takes JSON.
      fail(
        {
          record: r,
          event: {},
          stage: 'pipeline',
          code: 'TRIB_ERR_PIPELINE_BAD_PAYLOAD',
          reason: `the stored event is not JSON: ${(err as Error).message}`,
          kind: 'failed',
        },
        JSON.stringify(r.json),
      );
    }
    if (isPlainObject(event)) current.push({ record: r, event: event as SegmentEvent });
  }

  for (const stage of stages) {
    if (current.length === 0) break;
    let result: Awaited<ReturnType<Stage['run']>>;
    try {
      result = await stage.run(current);
    } catch (err) {
      for (const pe of current) {
        fail({
          record: pe.record,
          event: pe.event,
          stage: stage.name,
          code: 'TRIB_ERR_PIPELINE_STAGE_ERROR',
          reason: `stage ${stage.name} failed: ${(err as Error).message}`,
          kind: 'failed',
        });
      }
      current = [];
      break;
    }
    for (const f of result.fail) fail(f);
    for (const d of result.drop) {
      if (!ended.has(d.record.offset)) ended.set(d.record.offset, { stage: stage.name, outcome: 'filtered' });
    }
    current = result.pass;
  }

  const passed = new Set<number>();
  for (const pe of current) {
    passed.add(pe.record.offset);
    out.rows.push({
      messageId: pe.event.messageId,
      sourceId: pe.record.sourceId,
      receivedAt: pe.record.receivedAt,
      logOffset: pe.record.offset,
      json: pe.changed ? JSON.stringify(pe.event) : pe.record.json,
    });
  }
  for (const [offset] of byOffset) {
    if (passed.has(offset)) out.outcomes.push({ stage: 'load', outcome: 'passed', offset });
    else {
      const e = ended.get(offset) ?? { stage: 'pipeline', outcome: 'filtered' as const };
      out.outcomes.push({ ...e, offset });
    }
  }
  return out;
}

function toStageFailedRow(f: Fate, payload?: string): FailedRow {
  const r = f.record;
  let retryOf: string | undefined;
  const t = (f.event as { _tributary?: { retryOf?: unknown } })._tributary;
  if (t && typeof t.retryOf === 'string') retryOf = t.retryOf;
  return {
    logOffset: r.offset,
    sourceId: r.sourceId,
    messageId: r.messageId,
    stage: f.stage,
    code: f.code,
    reason: f.reason,
    receivedAt: new Date(r.receivedAt).toISOString(),
    // The event as it entered the stages (privacy policy already applied at collection).
    json: payload ?? r.json,
    logs: f.logs,
    retryOf,
  };
}
