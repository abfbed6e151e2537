import { isEventType, isPlainObject, type SegmentEvent } from '../../spec/event.js';
import type { Sandbox } from '../transform/sandbox.js';
import type { PipelineEvent, Stage, StageResult } from './stage.js';

/**
 * One user transformation: each event goes in; an event, several, or none come out. A
 * function that throws, runs out of time or memory, or returns something that is not an
 * event fails that event only, which goes to the failed-event store with the function's
 * log lines. Outputs without a `type` or `messageId` take the input's; a second output
 * with the same messageId gets `<messageId>-<n>`, the same on every run, so a retry
 * never loads it twice.
 */
export class TransformStage implements Stage {
  readonly name = 'transform';

  constructor(
    readonly id: string,
    private readonly sandbox: Sandbox,
  ) {}

  async run(events: PipelineEvent[]): Promise<StageResult> {
    const result: StageResult = { pass: [], drop: [], fail: [] };
    const outcomes = await this.sandbox.run(events.map((pe) => pe.event));
    for (let i = 0; i < events.length; i++) {
      const pe = events[i]!;
      const r = outcomes[i]!;
      const problem = r.ok ? this.outputs(pe, r.events, result) : { code: r.code, message: r.message };
      if (problem) {
        result.fail.push({
          record: pe.record,
          event: pe.event,
          stage: this.name,
          code: problem.code,
          reason: `transformation ${this.id}: ${problem.message}`,
          kind: 'failed',
          logs: r.logs,
        });
      }
    }
    return result;
  }

  /** Passes on what the function returned, or says what is wrong with it. */
  private outputs(
    pe: PipelineEvent,
    events: unknown[],
    result: StageResult,
  ): { code: string; message: string } | undefined {
    if (events.length === 0) {
      result.drop.push(pe);
      return undefined;
    }
    const ids = new Set<string>();
    const out: PipelineEvent[] = [];
    for (let k = 0; k < events.length; k++) {
      const o = events[k];
      if (!isPlainObject(o))
        return { code: 'TRIB_ERR_TRANSFORM_BAD_OUTPUT', message: `output ${k} is not an object` };
      o.type ??= pe.event.type;
      if (!isEventType(o.type))
        return { code: 'TRIB_ERR_TRANSFORM_BAD_OUTPUT', message: `output ${k} has no valid "type"` };
      let id = typeof o.messageId === 'string' && o.messageId !== '' ? o.messageId : pe.event.messageId;
      if (ids.has(id)) id = `${pe.event.messageId}-${k}`;
      ids.add(id);
      o.messageId = id;
      o.receivedAt ??= pe.event.receivedAt;
      o.timestamp ??= pe.event.timestamp;
      out.push({ record: pe.record, event: o as SegmentEvent, changed: true });
    }
    result.pass.push(...out);
    return undefined;
  }

  close(): Promise<void> {
    return this.sandbox.close();
  }
}
