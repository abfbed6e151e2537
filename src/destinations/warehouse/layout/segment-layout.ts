import type { ColumnType } from './types.js';

/**
 * The Segment table layout of one source schema: what rows an event becomes. Pure: no I/O,
 * no names yet (the {@link WarehouseModel} names and types the columns).
 *
 * - every call: `tracks`, `identifies`, `pages`, `screens`, `groups` or `aliases`, with the
 *   core columns and `context_*` flattened;
 * - a track also goes to the table of its event name, with its properties as columns;
 * - an identify with a userId also updates `users` (latest value of each trait per user).
 */

/** The standard tables, in the order they are described to users. */
export const STANDARD_TABLES = [
  'tracks',
  'identifies',
  'users',
  'pages',
  'screens',
  'groups',
  'aliases',
] as const;
export type StandardTable = (typeof STANDARD_TABLES)[number];

/** Table of rejected values, one per source schema. */
export const DISCARDS_TABLE = 'discards';
/** JSON column holding the properties of a table that reached the engine's column limit. */
export const OVERFLOW_COLUMN = '_overflow';

/** Core columns and their fixed types. Properties whose names fold to one of these are dropped. */
export const CORE_COLUMNS: Readonly<Record<string, ColumnType>> = {
  id: 'varchar',
  received_at: 'timestamp',
  sent_at: 'timestamp',
  timestamp: 'timestamp',
  original_timestamp: 'timestamp',
  user_id: 'varchar',
  anonymous_id: 'varchar',
  event: 'varchar',
  event_text: 'varchar',
  name: 'varchar',
  group_id: 'varchar',
  previous_id: 'varchar',
  loaded_at: 'timestamp',
};

export interface LayoutRow {
  /** Registry key of the table: `std:<table>` or `event:<event name>`. */
  tableKey: string;
  /** Name to fold when the table is new. */
  tableBase: string;
  /** `upsert`: merge with the stored row of the same id, keeping stored values the new row lacks. */
  mode: 'insert' | 'upsert';
  /** The messageId (the user id in `users`). */
  id: string;
  /** Core columns (names of {@link CORE_COLUMNS}) and their values. */
  core: Record<string, unknown>;
  /** Flattened `context`: path (keys joined with `.`) and value. */
  context: [string, unknown][];
  /** Flattened properties or traits. */
  properties: [string, unknown][];
}

/** Nested objects flatten into `a.b` paths; arrays and scalars are leaves. */
export function flatten(value: unknown, prefix = '', out: [string, unknown][] = []): [string, unknown][] {
  if (value === null || typeof value !== 'object' || Array.isArray(value)) {
    if (prefix !== '') out.push([prefix, value]);
    return out;
  }
  for (const [k, v] of Object.entries(value)) flatten(v, prefix === '' ? k : `${prefix}.${k}`, out);
  return out;
}

/** A row of a call's table: the core columns, up to two more, context and properties. */
function callRow(
  event: Record<string, unknown>,
  messageId: string,
  tableKey: string,
  tableBase: string,
  context: [string, unknown][],
  properties: [string, unknown][],
  extraName?: string,
  extraValue?: unknown,
  extraName2?: string,
  extraValue2?: unknown,
): LayoutRow {
  const core: Record<string, unknown> = {
    id: messageId,
    received_at: event.receivedAt,
    sent_at: event.sentAt,
    timestamp: event.timestamp,
    original_timestamp: event.originalTimestamp,
    user_id: str(event.userId),
    anonymous_id: str(event.anonymousId),
  };
  if (extraName !== undefined) core[extraName] = extraValue;
  if (extraName2 !== undefined) core[extraName2] = extraValue2;
  return { tableKey, tableBase, mode: 'insert', id: messageId, core, context, properties };
}

/** The standard table of each call type (`track` → `tracks`, …). */
export const TABLE_OF_TYPE: Readonly<Record<string, StandardTable>> = {
  track: 'tracks',
  identify: 'identifies',
  page: 'pages',
  screen: 'screens',
  group: 'groups',
  alias: 'aliases',
};

const str = (v: unknown): string | undefined =>
  v === null || v === undefined ? undefined : typeof v === 'string' ? v : JSON.stringify(v);

/**
 * The rows one processed event becomes.
 *
 * @param eventTable folds an event name into its table name (the same folding as columns),
 *   for the `event` column of `tracks`.
 */
export function layoutEvent(
  event: Record<string, unknown>,
  messageId: string,
  eventTable: (name: string) => string,
): LayoutRow[] {
  const type = String(event.type);
  const table = TABLE_OF_TYPE[type];
  if (!table) return [];
  const context = flatten(event.context);
  const rows: LayoutRow[] = [];
  switch (type) {
    case 'track': {
      const name = str(event.event) ?? '';
      const folded = eventTable(name);
      rows.push(
        callRow(event, messageId, 'std:tracks', 'tracks', context, [], 'event', folded, 'event_text', name),
        callRow(
          event,
          messageId,
          `event:${name}`,
          name,
          context,
          flatten(event.properties),
          'event',
          folded,
          'event_text',
          name,
        ),
      );
      break;
    }
    case 'identify': {
      rows.push(callRow(event, messageId, 'std:identifies', 'identifies', context, flatten(event.traits)));
      const userId = str(event.userId);
      if (userId !== undefined) {
        rows.push({
          tableKey: 'std:users',
          tableBase: 'users',
          mode: 'upsert',
          id: userId,
          core: { id: userId, received_at: event.receivedAt },
          context: [],
          properties: rows[0]!.properties,
        });
      }
      break;
    }
    case 'page':
    case 'screen':
      rows.push(
        callRow(
          event,
          messageId,
          `std:${table}`,
          table,
          context,
          flatten(event.properties),
          'name',
          str(event.name),
        ),
      );
      break;
    case 'group':
      rows.push(
        callRow(
          event,
          messageId,
          'std:groups',
          'groups',
          context,
          flatten(event.traits),
          'group_id',
          str(event.groupId),
        ),
      );
      break;
    case 'alias':
      rows.push(
        callRow(
          event,
          messageId,
          'std:aliases',
          'aliases',
          context,
          [],
          'previous_id',
          str(event.previousId),
        ),
      );
      break;
  }
  return rows;
}
