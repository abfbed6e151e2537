/**
 * What a pull source's rows become, configured per stream: shared by every pull connector
 * (files, databases), whose stream specs extend `StreamSettings`. Light: zod only, so the
 * configuration imports it without any engine.
 */
import { z } from 'zod';

/** A column's type: what a value is checked and converted to, and its column in objects tables. */
export const ColumnType = z
  .enum(['string', 'integer', 'number', 'boolean', 'timestamp', 'date', 'json'])
  .describe(
    'string (VARCHAR), integer (BIGINT), number (DOUBLE), boolean, timestamp (TIMESTAMPTZ, ISO-8601), date (YYYY-MM-DD), json.',
  );
export type ColumnType = z.infer<typeof ColumnType>;

const Column = z.string().min(1).describe('A column of the stream.');

/** Columns copied into `traits` or `properties`: a list, `{name: column}`, or `"*"` for every column. */
const ColumnSet = z
  .union([z.literal('*'), z.array(Column), z.record(z.string().min(1), Column)])
  .describe('Columns to copy: "*" (every column), a list of columns, or {name: column}.');
export type ColumnSet = z.infer<typeof ColumnSet>;

/**
 * One event per row. Events are normalized as the collection API does (src/spec/normalize.ts)
 * and appended to the event log, so they go through the whole pipeline (plans, mapping,
 * privacy, transformations, identity, destinations).
 */
export const EventMapping = z
  .object({
    type: z.enum(['identify', 'track', 'group']).describe('The event type each row becomes.'),
    event: z
      .string()
      .min(1)
      .optional()
      .describe('track: the event name (literal), unless eventColumn is set.'),
    eventColumn: Column.optional().describe('track: the column holding the event name.'),
    userId: Column.optional().describe('Column holding the userId.'),
    anonymousId: Column.optional().describe('Column holding the anonymousId.'),
    anonymousIdPrefix: z
      .string()
      .optional()
      .describe('Text put before the anonymousId column\'s value, e.g. "crm:" (default none).'),
    groupId: Column.optional().describe('group: the column holding the groupId.'),
    timestamp: Column.optional().describe(
      'Column holding the event time (ISO-8601); default the time of the sync.',
    ),
    traits: ColumnSet.optional().describe('identify and group: columns copied into traits.'),
    properties: ColumnSet.optional().describe('track: columns copied into properties.'),
  })
  .strict()
  .superRefine((m, ctx) => {
    if (m.userId === undefined && m.anonymousId === undefined)
      ctx.addIssue({ code: 'custom', message: 'name the userId or anonymousId column (or both)' });
    if (m.type === 'track' && m.event === undefined && m.eventColumn === undefined)
      ctx.addIssue({
        code: 'custom',
        path: ['event'],
        message: 'a track mapping needs event or eventColumn',
      });
    if (m.type === 'group' && m.groupId === undefined)
      ctx.addIssue({
        code: 'custom',
        path: ['groupId'],
        message: 'a group mapping needs the groupId column',
      });
  });
export type EventMapping = z.infer<typeof EventMapping>;

/**
 * The settings every pull stream has: its key, how it is read, and what its rows become.
 * Connectors extend it with where the rows are (a path, a table, a query).
 */
export const StreamSettings = z.object({
  name: z
    .string()
    .regex(
      /^[a-z_][a-z0-9_]{0,62}$/,
      'use lowercase letters, digits and "_" (at most 63), not starting with a digit',
    )
    .describe('Name of the stream; objects are stored in the table <source>.<name>.'),
  primaryKey: z
    .array(Column)
    .default([])
    .describe(
      'Columns identifying a row: objects are upserted on them. Empty: the whole row is the key (identical rows are stored once).',
    ),
  syncMode: z
    .enum(['full_refresh', 'incremental'])
    .default('incremental')
    .describe(
      'incremental: each sync reads what the last one did not (new files, rows past the cursor). full_refresh: each sync reads everything and marks objects not seen again as deleted.',
    ),
  cursorField: Column.optional().describe('incremental database streams: the column that only grows.'),
  columns: z
    .record(z.string().min(1), ColumnType)
    .optional()
    .describe(
      'Types of columns; a value that does not convert is a failed row. Others keep the type the source gives.',
    ),
  objects: z
    .boolean()
    .default(true)
    .describe(
      'Upsert rows into the table <source>.<stream> of the store (with _tributary_synced_at and _tributary_deleted).',
    ),
  events: z
    .union([EventMapping, z.array(EventMapping).min(1)])
    .optional()
    .transform((v) => (v === undefined ? [] : Array.isArray(v) ? v : [v]))
    .describe('Events each row becomes (one mapping or a list).'),
  identifiers: z
    .record(z.string().regex(/^[a-z_][a-z0-9_]{0,62}$/), Column)
    .optional()
    .describe(
      'Identifiers of the row for identity resolution, e.g. {email: requester_email}: each row also becomes an identify event with anonymousId <source>:<stream>:<key> and these as traits, so objects join profiles.',
    ),
});
export type StreamSettings = z.infer<typeof StreamSettings>;

/** Settings every pull source has beside its streams. */
export const PullSourceSettings = {
  schedule: z
    .string()
    .min(1)
    .optional()
    .describe(
      'Cron expression (croner, e.g. "*/15 * * * *"): the server syncs the source on it. Default: only on demand.',
    ),
  retries: z
    .number()
    .int()
    .min(0)
    .max(20)
    .default(3)
    .describe(
      'Times a read that fails (connection lost, file gone) is retried, with backoff, from the last committed state.',
    ),
};
