import { Ajv2020, type ErrorObject, type ValidateFunction } from 'ajv/dist/2020.js';
import addFormats from 'ajv-formats';
import type { TrackingPlan } from '../../config/quality-schema.js';
import { isPlainObject, type JsonObject, type SegmentEvent } from '../../spec/event.js';

/** One way an event breaks a plan. */
export interface Violation {
  plan: string;
  kind: 'unplanned_event' | 'schema';
  /** JSON pointer inside the event (`/properties/total`). */
  path: string;
  message: string;
}

interface CompiledSchema {
  validate: ValidateFunction;
  /** Property names the schema lists, for `omit_properties`; undefined when it lists none. */
  known?: ReadonlySet<string>;
}

/** What a plan has to say about one event. */
export interface PlanVerdict {
  plan: CompiledPlan;
  planned: boolean;
  violations: Violation[];
  /** Properties removed by `omit_properties`. */
  omitted: string[];
}

/**
 * A tracking plan with every schema compiled once (ajv). Schemas of `properties` and
 * `traits` are checked against those objects (an absent one counts as `{}`).
 */
export class CompiledPlan {
  readonly name: string;
  readonly onViolation: TrackingPlan['onViolation'];
  readonly onUnplannedEvent: TrackingPlan['onUnplannedEvent'];
  private readonly events = new Map<string, { properties?: CompiledSchema; context?: CompiledSchema }>();
  private readonly identify?: CompiledSchema;
  private readonly group?: CompiledSchema;
  private readonly context?: CompiledSchema;

  /** @throws Error naming the schema when one does not compile. */
  constructor(plan: TrackingPlan) {
    this.name = plan.name;
    this.onViolation = plan.onViolation;
    this.onUnplannedEvent = plan.onUnplannedEvent;
    const ajv = new Ajv2020({ allErrors: true, strict: false });
    addFormats.default(ajv);
    const compile = (schema: JsonObject | undefined, where: string): CompiledSchema | undefined => {
      if (schema === undefined) return undefined;
      try {
        const props = schema.properties;
        return {
          validate: ajv.compile(schema),
          known: isPlainObject(props) ? new Set(Object.keys(props)) : undefined,
        };
      } catch (err) {
        throw new Error(`plan "${plan.name}", ${where}: ${(err as Error).message}`, { cause: err });
      }
    };
    for (const [name, e] of Object.entries(plan.events)) {
      this.events.set(name, {
        properties: compile(e.properties, `events["${name}"].properties`),
        context: compile(e.context, `events["${name}"].context`),
      });
    }
    this.identify = compile(plan.identify?.traits, 'identify.traits');
    this.group = compile(plan.group?.traits, 'group.traits');
    this.context = compile(plan.context, 'context');
  }

  /** True when this plan has a say on the event (names the track event, or has a schema for its type). */
  covers(event: SegmentEvent): boolean {
    if (event.type === 'track') return this.events.has(event.event ?? '');
    if (event.type === 'identify') return this.identify !== undefined || this.context !== undefined;
    if (event.type === 'group') return this.group !== undefined || this.context !== undefined;
    return this.context !== undefined;
  }

  /**
   * Checks the event; with `omit_properties`, removes the properties the event's schema
   * does not list (in place) before checking.
   */
  check(event: SegmentEvent): PlanVerdict {
    const verdict: PlanVerdict = { plan: this, planned: true, violations: [], omitted: [] };
    const run = (s: CompiledSchema | undefined, field: 'properties' | 'traits' | 'context') => {
      if (!s) return;
      let target = event[field];
      if (!isPlainObject(target)) target = {};
      if (this.onViolation === 'omit_properties' && s.known && field !== 'context') {
        for (const key of Object.keys(target as JsonObject)) {
          if (!s.known.has(key)) {
            delete (target as JsonObject)[key];
            verdict.omitted.push(`${field}.${key}`);
          }
        }
      }
      if (!s.validate(target)) {
        for (const e of s.validate.errors ?? []) verdict.violations.push(toViolation(this.name, field, e));
      }
    };
    if (event.type === 'track') {
      const e = this.events.get(event.event ?? '');
      if (!e) {
        verdict.planned = false;
        verdict.violations.push({
          plan: this.name,
          kind: 'unplanned_event',
          path: '/event',
          message: `event "${event.event}" is not in the plan`,
        });
        return verdict;
      }
      run(e.properties, 'properties');
      run(e.context ?? this.context, 'context');
      return verdict;
    }
    if (event.type === 'identify') run(this.identify, 'traits');
    if (event.type === 'group') run(this.group, 'traits');
    run(this.context, 'context');
    return verdict;
  }
}

function toViolation(plan: string, field: string, e: ErrorObject): Violation {
  const extra =
    e.keyword === 'additionalProperties'
      ? ` (${(e.params as { additionalProperty: string }).additionalProperty})`
      : e.keyword === 'enum'
        ? `: ${JSON.stringify((e.params as { allowedValues: unknown[] }).allowedValues)}`
        : '';
  return {
    plan,
    kind: 'schema',
    path: `/${field}${e.instancePath}`,
    message: `${e.message ?? e.keyword}${extra}`,
  };
}
