import { z } from 'zod';
import type { Delivery } from '../stream.js';
import { valueAt } from '../stream-support.js';

/**
 * The table side of the database upsert kinds (`postgres-upsert`, `mysql-upsert`): which
 * columns a delivery fills from which paths, the key the upsert conflicts on, and the columns
 * a privacy deletion matches. Zod and plain functions only: the specs import it.
 */

const IDENT = /^[A-Za-z_][A-Za-z0-9_]{0,62}$/;
const identifier = (what: string) =>
  z.string().regex(IDENT, `${what}: letters, digits and "_", not starting with a digit, at most 63`);

/** A column's SQL type for `createTable`: a type name with an optional size, nothing else. */
const SqlType = z
  .string()
  .regex(
    /^[A-Za-z][A-Za-z0-9 ]{0,40}(\(\d{1,5}(,\s*\d{1,3})?\))?$/,
    'a SQL type such as text, integer, numeric(12,2)',
  )
  .describe('SQL type of the column when the destination creates the table (createTable).');

export const ColumnMapping = z
  .union([z.string().min(1), z.object({ path: z.string().min(1), type: SqlType.optional() }).strict()])
  .describe(
    'Where the column takes its value: a dotted path into the event or row (`userId`, `properties.plan`, `traits.email`), `$key` (the idempotency key: the messageId, or the row key of reverse ETL), `$op`, or `$` (the whole payload as JSON); or `{ path, type }` to give the type createTable uses.',
  );

export const tableFields = {
  table: identifier('table').describe('The table upserted into.'),
  columns: z
    .record(identifier('column'), ColumnMapping)
    .default({ message_id: '$key', payload: '$' })
    .describe(
      'Column → path. Default: `message_id` ← the idempotency key, `payload` ← the whole event as JSON. Paths absent from a delivery write NULL.',
    ),
  key: z
    .array(identifier('key column'))
    .min(1)
    .default(['message_id'])
    .describe(
      "The columns the upsert conflicts on (the table's primary key or a unique index on exactly them); each must be in `columns` and have a value in every delivery.",
    ),
  createTable: z
    .boolean()
    .default(false)
    .describe('Create the table (and its primary key on `key`) when it does not exist.'),
  identityColumns: z
    .record(z.string().min(1), identifier('column'))
    .default({})
    .describe(
      'For privacy deletion: identifier type → column (`user_id: user_id`, `email: email`); a deletion request removes the rows whose column holds the value. Types not listed are ignored.',
    ),
};

/** The mapping fields after parsing. */
export interface TableFields {
  table: string;
  columns: Record<string, z.infer<typeof ColumnMapping>>;
  key: string[];
  createTable: boolean;
  identityColumns: Record<string, string>;
}

/** Refines a spec with the table fields: keys and identity columns must be mapped columns. */
export function checkTableFields(c: TableFields, ctx: z.RefinementCtx): void {
  for (const k of c.key) {
    if (!Object.hasOwn(c.columns, k))
      ctx.addIssue({ code: 'custom', path: ['key'], message: `key column "${k}" is not in columns` });
  }
  for (const [type, col] of Object.entries(c.identityColumns)) {
    if (!Object.hasOwn(c.columns, col))
      ctx.addIssue({
        code: 'custom',
        path: ['identityColumns', type],
        message: `column "${col}" is not in columns`,
      });
  }
}

export interface Column {
  name: string;
  path: string;
  /** The type createTable gives it; undefined: the dialect's default for its path. */
  type?: string;
  key: boolean;
}

/** The columns of a mapping, key columns first, in the order given. */
export function tableColumns(c: TableFields): Column[] {
  const cols = Object.entries(c.columns).map(([name, m]) => ({
    name,
    path: typeof m === 'string' ? m : m.path,
    type: typeof m === 'string' ? undefined : m.type,
    key: c.key.includes(name),
  }));
  return [...cols.filter((x) => x.key), ...cols.filter((x) => !x.key)];
}

/** One delivery as row values (in `tableColumns` order), or why it cannot be. */
export type EncodedRow = { values: unknown[]; keyText: string } | { error: string };

/**
 * The row values of a delivery: objects and arrays as JSON text, absent values NULL; a key
 * column without a value cannot be encoded.
 */
export function encodeRow(columns: readonly Column[], d: Delivery): EncodedRow {
  const values: unknown[] = [];
  for (const col of columns) {
    const v = valueAt(d, col.path);
    if (col.key && (v === undefined || v === null || v === ''))
      return { error: `key column ${col.name} has no value at ${col.path}` };
    if (v === undefined || v === null) values.push(null);
    else if (typeof v === 'object') values.push(JSON.stringify(v));
    else values.push(v);
  }
  const keyText = JSON.stringify(values.slice(0, columns.filter((c) => c.key).length));
  return { values, keyText };
}
