import { Cron } from 'croner';
import { z } from 'zod';
import { Duration } from '../../config/duration.js';
import { payloadShape } from '../../store/model-store.js';

/** How a model's changes reach its destination. */
export const SyncMode = z
  .enum(['insert', 'update', 'upsert', 'mirror'])
  .describe(
    'insert: new rows only (op insert); update: new and changed rows as op update (the receiver updates what it has); upsert: new and changed rows (op upsert); mirror: as upsert, and rows gone from the result are deleted (op delete).',
  );
export type SyncMode = z.infer<typeof SyncMode>;

const Identifier = z
  .string()
  .regex(/^[A-Za-z0-9][A-Za-z0-9_-]{0,62}$/, 'use letters, digits, "-" and "_" (at most 63)');

/**
 * A reverse-ETL model: SQL on the warehouse whose rows are kept in sync with a streaming
 * destination (`models:` in the configuration, docs/configuration.md).
 *
 * @example
 * models:
 *   - id: active-users
 *     sql: SELECT user_id, email, count(*) AS orders FROM events WHERE event = 'Order Completed' GROUP BY ALL
 *     primaryKey: user_id
 *     destination: crm
 *     syncMode: upsert
 *     schedule: '0 * * * *'
 *     mapping: { user_id: id, email: traits.email, orders: traits.orders }
 */
export const ModelConfig = z
  .object({
    id: Identifier.describe(
      'Name of the model: in the CLI, the admin API, the run records and delivery keys.',
    ),
    name: z.string().optional().describe('What people call it.'),
    enabled: z.boolean().default(true).describe('false: the model is neither scheduled nor run on demand.'),
    sql: z
      .string()
      .min(1)
      .describe(
        "One SELECT over the warehouse's tables (events, the Segment tables, the profile tables, source objects); it runs with the guards of /admin/v1/query: no files, no URLs, no writes.",
      ),
    primaryKey: z
      .union([z.string().min(1), z.array(z.string().min(1)).min(1)])
      .transform((v) => (typeof v === 'string' ? [v] : v))
      .describe(
        'Column(s) that identify a row; rows with a NULL or a repeated key are not sent (the run counts them failed).',
      ),
    destination: z.string().min(1).describe('Id of the streaming destination the changes go to.'),
    syncMode: SyncMode.default('upsert'),
    mapping: z
      .record(z.string().min(1), z.string().regex(/^[^.]+(\.[^.]+)*$/, 'a field name, or a dotted path'))
      .optional()
      .describe(
        'Model column → destination field; a dotted path (traits.email) makes nested objects. Default: every column under its own name. With a mapping, only the mapped columns are sent (and compared).',
      ),
    schedule: z
      .string()
      .min(1)
      .optional()
      .describe('Cron expression (croner, e.g. "*/15 * * * *"): the server runs the model on it.'),
    every: Duration.optional().describe(
      'Or an interval between the end of a run and the start of the next ("15m"). Default: only on demand.',
    ),
    batchSize: z.number().int().min(1).max(10_000).default(500).describe('Rows per send to the destination.'),
    timeout: Duration.prefault('30s').describe(
      'Longest one send may take; then its rows are retried next run.',
    ),
    queryTimeout: Duration.prefault('10m').describe(
      'Longest the SQL may run; then the run fails (TRIB_ERR_QUERY_TIMEOUT).',
    ),
  })
  .strict()
  .superRefine((m, ctx) => {
    if (m.schedule !== undefined && m.every !== undefined)
      ctx.addIssue({ code: 'custom', path: ['every'], message: 'give schedule or every, not both' });
    if (m.schedule !== undefined) {
      try {
        new Cron(m.schedule, { paused: true }).stop();
      } catch (err) {
        ctx.addIssue({ code: 'custom', path: ['schedule'], message: (err as Error).message });
      }
    }
    if (m.every !== undefined && m.every < 1000)
      ctx.addIssue({ code: 'custom', path: ['every'], message: 'at least 1s' });
    if (m.mapping !== undefined) {
      try {
        payloadShape(m.mapping);
      } catch (err) {
        ctx.addIssue({ code: 'custom', path: ['mapping'], message: (err as Error).message });
      }
    }
  });
export type ModelConfig = z.output<typeof ModelConfig>;

/** `models:`: ids unique. */
export const ModelList = z
  .array(ModelConfig)
  .default([])
  .superRefine((models, ctx) => {
    const seen = new Set<string>();
    models.forEach((m, i) => {
      if (seen.has(m.id))
        ctx.addIssue({ code: 'custom', path: [i, 'id'], message: `duplicate model id "${m.id}"` });
      seen.add(m.id);
    });
  })
  .describe(
    'Reverse-ETL models: SQL on the warehouse synced to streaming destinations (docs/configuration.md).',
  );
