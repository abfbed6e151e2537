/** The Segment-spec event model as Tributary stores it. */

export const EVENT_TYPES = ['track', 'identify', 'page', 'screen', 'group', 'alias'] as const;
export type EventType = (typeof EVENT_TYPES)[number];

/** Short route names analytics.js uses (`/v1/t` is `/v1/track`, …). */
export const SHORT_TYPES: Readonly<Record<string, EventType | 'batch'>> = {
  t: 'track',
  i: 'identify',
  p: 'page',
  s: 'screen',
  g: 'group',
  a: 'alias',
  b: 'batch',
};

export type JsonObject = { [key: string]: unknown };

/** An event after collection: envelope checked, server fields set. */
export interface SegmentEvent extends JsonObject {
  type: EventType;
  messageId: string;
  receivedAt: string;
  timestamp: string;
  userId?: string;
  anonymousId?: string;
  event?: string;
  context?: JsonObject;
}

/** Server-side annotations kept on an event, under `_tributary`. */
export interface EventWarning {
  code: string;
  message: string;
}

export function isEventType(value: unknown): value is EventType {
  return typeof value === 'string' && (EVENT_TYPES as readonly string[]).includes(value);
}

export function isPlainObject(value: unknown): value is JsonObject {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}
