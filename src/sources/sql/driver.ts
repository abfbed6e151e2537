/**
 * What the shared SQL-source logic (`./read.ts`, `./discover.ts`) needs from a database: one
 * connection that streams a statement's rows, lists the transactions open on the server, and
 * quotes names and values its own way. `../postgres/driver.ts` and `../mysql/driver.ts`
 * implement it.
 */

/** What a column's values are, for conversion, cursor comparison and the catalog. */
import type { StreamDescriptor } from '../source.js';

export type ColumnKind =
  | 'integer'
  | 'decimal'
  | 'float'
  | 'boolean'
  | 'timestamptz'
  | 'timestamp'
  | 'date'
  | 'time'
  | 'text'
  | 'binary'
  | 'json'
  | 'array'
  | 'other';

/** A column of a result, as the driver read its metadata. */
export interface ResultField {
  name: string;
  kind: ColumnKind;
  /** The server's type name (`timestamptz`, `bigint unsigned`, …). */
  sourceType: string;
  /**
   * The value as JSON (see the connector's type mapping); throws `BadValue` for a value it
   * cannot convert.
   */
  convert(raw: unknown): unknown;
  /** The value as the server writes it: what a state saves and a later query compares with. */
  text(raw: unknown): string;
}

/** A value the connector cannot turn into JSON: the row becomes a `failed` message. */
export class BadValue extends Error {
  override readonly name = 'BadValue';
}

/** A batch of a streamed statement's rows (values in the driver's raw form). */
export interface RowBatch {
  fields: readonly ResultField[];
  rows: readonly (readonly unknown[])[];
}

/** Builds a statement's parameter list as placeholders are written. */
export interface Params {
  readonly values: unknown[];
}

export interface SqlConnection {
  readonly dialect: SqlDialect;
  /** A metadata query (no streaming, driver types). */
  query<T = Record<string, unknown>>(sql: string, params?: readonly unknown[]): Promise<T[]>;
  /** The columns a statement's result has (it is run with no rows). */
  describe(sql: string): Promise<ResultField[]>;
  /** A statement's rows in batches, read with the socket paused while a batch is consumed. */
  stream(sql: string, params: readonly unknown[], batchSize: number): AsyncIterable<RowBatch>;
  /** The server clock, epoch seconds. */
  clock(): Promise<number>;
  /**
   * Start times (epoch seconds) of the transactions open on the server that could still write
   * (this connection's and other syncs' read-only ones left out); null where the start is
   * hidden from this user.
   */
  openTransactions(): Promise<(number | null)[]>;
  /** The primary key columns of a table, in key order (empty: none). */
  primaryKey(schema: string | undefined, table: string): Promise<string[]>;
  /** Every table and view this user may read, with columns and keys. */
  catalog(): Promise<StreamDescriptor[]>;
  /** Starts a read-only transaction whose reads all see one snapshot. */
  beginSnapshot(): Promise<void>;
  /** Ends the snapshot transaction. */
  endSnapshot(): Promise<void>;
  end(): Promise<void>;
}

export interface SqlDialect {
  readonly name: 'postgres' | 'mysql';
  quoteIdent(name: string): string;
  /** `schema.table` quoted; `schema` undefined: the connection's default. */
  quoteTable(schema: string | undefined, name: string): string;
  /** A placeholder for a value saved by `ResultField.text`, compared with a column of that field's type. */
  param(params: Params, text: string, field: ResultField): string;
  /**
   * The condition "the tuple of `columns` sorts after `values`" (keyset pagination), the
   * columns non-null.
   */
  after(
    params: Params,
    columns: readonly string[],
    values: readonly string[],
    fields: readonly ResultField[],
  ): string;
}

export function newParams(): Params {
  return { values: [] };
}
