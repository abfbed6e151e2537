import type { Delivered } from '../../log/event-log.js';
import type { JsonObject, SegmentEvent } from '../../spec/event.js';

/** An event inside the pipeline: parsed, with the log record it came from. */
export interface PipelineEvent {
  record: Delivered;
  event: SegmentEvent;
  /**
   * Set by a stage that changed the event. An event no stage changed is stored as the log
   * holds it, without serialising it again (most events pass a plan untouched).
   */
  changed?: boolean;
}

/** Why an event left the pipeline early. `blocked` fates are decisions of a rule, `failed` ones errors. */
export interface Fate {
  record: Delivered;
  /** The payload to keep in the failed-event store. */
  event: JsonObject;
  stage: string;
  code: string;
  reason: string;
  kind: 'blocked' | 'failed';
  /** Log lines of a user function, when one ran. */
  logs?: string[];
}

/**
 * Every event a stage receives leaves with a fate: passed on (maybe changed, maybe several
 * per input for a transformation), dropped on purpose (a function returned nothing), or
 * failed/blocked (kept in the failed-event store).
 */
export interface StageResult {
  pass: PipelineEvent[];
  drop: PipelineEvent[];
  fail: Fate[];
}

/** One pipeline stage. Pure where it can be: the stages here do no I/O. */
export interface Stage {
  readonly name: string;
  run(events: PipelineEvent[]): StageResult | Promise<StageResult>;
  close?(): Promise<void>;
}

/** Tributary's annotations on an event (`_tributary`), created on first use. */
export function annotations(event: JsonObject): JsonObject {
  let a = event._tributary as JsonObject | undefined;
  if (typeof a !== 'object' || a === null || Array.isArray(a)) {
    a = {};
    event._tributary = a;
  }
  return a;
}

/** Appends to an annotation list (`_tributary.<key>`). */
export function annotate(event: JsonObject, key: string, items: readonly unknown[]): void {
  if (items.length === 0) return;
  const a = annotations(event);
  const list = Array.isArray(a[key]) ? (a[key] as unknown[]) : [];
  list.push(...items);
  a[key] = list;
}
