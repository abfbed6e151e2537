import jsonata from 'jsonata';
import type { StreamConsent, StreamFilters } from '../../config/destination-spec.js';
import { isPlainObject } from '../../spec/event.js';

/** Why an event does not go to a destination, or that it does. */
export type GateOutcome = 'pass' | 'filtered' | 'consent';

/**
 * A destination's filters and consent gate, compiled once. Applied to the event as the
 * pipeline stored it, before the destination's transformations.
 *
 * @example
 * const gate = EventGate.compile('crm', { types: ['track'], condition: 'properties.total > 10' },
 *   { categories: ['Marketing'], missing: 'send' });
 * await gate.decide(event, 'web'); // 'pass' | 'filtered' | 'consent'
 */
export class EventGate {
  private constructor(
    private readonly filters: StreamFilters | undefined,
    private readonly condition: jsonata.Expression | undefined,
    private readonly consent: StreamConsent | undefined,
  ) {}

  /** @throws Error naming the destination when the condition is not a JSONata expression. */
  static compile(id: string, filters?: StreamFilters, consent?: StreamConsent): EventGate {
    let condition: jsonata.Expression | undefined;
    if (filters?.condition !== undefined) {
      try {
        condition = jsonata(filters.condition);
      } catch (err) {
        throw new Error(
          `filters.condition of destination "${id}" is not a JSONata expression: ${(err as Error).message}`,
          {
            cause: err,
          },
        );
      }
    }
    return new EventGate(filters, condition, consent);
  }

  async decide(event: Record<string, unknown>, sourceId: string): Promise<GateOutcome> {
    const f = this.filters;
    if (f) {
      if (f.sources && !f.sources.includes(sourceId)) return 'filtered';
      const type = String(event.type ?? '');
      if (f.types && !(f.types as readonly string[]).includes(type)) return 'filtered';
      if (f.events) {
        const name =
          type === 'track' ? event.event : type === 'page' || type === 'screen' ? event.name : undefined;
        if (
          (type === 'track' || type === 'page' || type === 'screen') &&
          !f.events.includes(String(name ?? ''))
        )
          return 'filtered';
      }
      if (this.condition) {
        try {
          if ((await this.condition.evaluate(event)) !== true) return 'filtered';
        } catch {
          return 'filtered';
        }
      }
    }
    if (this.consent && !consented(event, this.consent)) return 'consent';
    return 'pass';
  }
}

/**
 * The Segment consent spec: `context.consent.categoryPreferences` maps each category to
 * true or false; every category the destination needs must be true.
 */
function consented(event: Record<string, unknown>, consent: StreamConsent): boolean {
  const context = isPlainObject(event.context) ? event.context : undefined;
  const c = context && isPlainObject(context.consent) ? context.consent : undefined;
  const prefs = c && isPlainObject(c.categoryPreferences) ? c.categoryPreferences : undefined;
  if (prefs === undefined) return consent.missing === 'send';
  return consent.categories.every((cat) => prefs[cat] === true);
}
