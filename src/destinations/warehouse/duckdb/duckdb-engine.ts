import {
  type DuckDBAppender,
  type DuckDBConnection,
  type DuckDBInstance,
  DuckDBTypeId,
  type DuckDBValue,
} from '@duckdb/node-api';
import { Slice } from '../../../platform/async/slice.js';
import type { CheckpointGate } from '../../../platform/duckdb/checkpoint-gate.js';
import { eraseTables, type RowTarget, scrubFreeBlocks } from '../../../platform/duckdb/duckdb-erase.js';
import { quoteIdent } from '../../../platform/duckdb/duckdb-sql.js';
import type { ApplyOptions, EngineState, OffsetScope, SqlEngine } from '../../destination.js';
import type { CellValue, ColumnType } from '../layout/types.js';
import type { LoadPlan, NameRecord, SchemaChange, TableLoad } from '../layout/warehouse-model.js';
import { scopedOffset } from '../offset-scope.js';

/** Marks the `loaded_at` column in an appender's column map. */
const LOADED_AT = -2;

/** Names rows per insert statement (9 parameters each). */
const NAMES_PER_INSERT = 5000;

const TYPES: Record<ColumnType, string> = {
  bigint: 'BIGINT',
  double: 'DOUBLE',
  boolean: 'BOOLEAN',
  timestamp: 'TIMESTAMPTZ',
  varchar: 'VARCHAR',
  json: 'JSON',
};

export interface DuckDBEngineOptions {
  /** Catalog (database) of the tables: the warehouse file, or another file attached to the instance. */
  catalog: string;
  /**
   * Column limit per table. DuckDB has no hard one; the default, PostgreSQL's 1,600, keeps
   * the tables alike in both engines.
   */
  maxColumns?: number;
  /**
   * The gate of the file's checkpoints, where something else checkpoints it (the embedded
   * warehouse file): appender flushes wait for a running checkpoint asynchronously instead of
   * holding the event loop.
   */
  checkpoints?: CheckpointGate;
}

/**
 * Segment tables in DuckDB, on a connection of its own to a shared instance (the embedded
 * warehouse file is open once per process). Rows are appended to a temporary staging table
 * with DuckDB's appender straight into the table, except those whose `id` one semi-join
 * finds stored already (no primary key: an ART index gets slower with every batch, see
 * docs/architecture.md); `users` rows are staged and merged.
 */
export class DuckDBEngine implements SqlEngine {
  readonly maxColumns: number;
  /** Loads are planned in parts, so planning never holds the event loop for a whole load. */
  readonly planPart = 2_000;
  private conn: DuckDBConnection | undefined;
  private readonly catalog: string;
  private readonly catalogName: string;
  private readonly orders = new Map<string, string[]>();
  private readonly checkpoints: CheckpointGate | undefined;

  constructor(
    private readonly instance: DuckDBInstance,
    options: DuckDBEngineOptions,
  ) {
    this.catalog = quoteIdent(options.catalog);
    this.catalogName = options.catalog;
    this.maxColumns = options.maxColumns ?? 1600;
    this.checkpoints = options.checkpoints;
  }

  private async connection(): Promise<DuckDBConnection> {
    this.conn ??= await this.instance.connect();
    return this.conn;
  }

  private table(schema: string, table: string): string {
    return `${this.catalog}.${quoteIdent(schema)}.${quoteIdent(table)}`;
  }

  refusesData(err: unknown): boolean {
    return duckdbRefusesData(err);
  }

  /** On a connection of its own: the load's may be inside a transaction. */
  async selectById(schema: string, table: string, id: string): Promise<Record<string, unknown>[]> {
    const c = await this.instance.connect();
    try {
      const r = await c.runAndReadAll(`SELECT * FROM ${this.table(schema, table)} WHERE id = $1 LIMIT 10`, [
        id,
      ]);
      const rows = r.getRowObjectsJson() as Record<string, unknown>[];
      // JSON conversion renders 64-bit integers as text; numbers where exact, as PostgreSQL's rows give.
      for (const row of rows)
        for (const [k, v] of Object.entries(row))
          if (typeof v === 'string' && /^-?\d+$/.test(v) && Number.isSafeInteger(Number(v))) {
            const type = r.columnTypes()[r.columnNames().indexOf(k)]?.typeId;
            if (
              type === DuckDBTypeId.BIGINT ||
              type === DuckDBTypeId.HUGEINT ||
              type === DuckDBTypeId.UBIGINT
            )
              row[k] = Number(v);
          }
      return rows;
    } finally {
      c.closeSync();
    }
  }

  /**
   * Rewrites every table of the destination's schemas holding the person's rows, then
   * overwrites the file's free blocks (`src/platform/duckdb/duckdb-erase.ts`). In the
   * warehouse file the store's own tables (schema `main`) are left to the store; the source
   * objects tables there (a schema per source) are erased with the Segment tables. Other
   * writers' flushes into the file wait for it (the checkpoint gate).
   */
  async erase(target: RowTarget): Promise<number> {
    const conn = await this.instance.connect();
    try {
      const skip = new Set(['main', '_tributary', 'information_schema', 'pg_catalog']);
      const run = async () => {
        const n = await eraseTables(conn, this.catalogName, (s) => !skip.has(s), target);
        // The warehouse file (the one with a gate) is scrubbed once per deletion by the store.
        if (n > 0 && !this.checkpoints) await scrubFreeBlocks(conn, this.catalogName);
        return n;
      };
      return await (this.checkpoints ? this.checkpoints.checkpoint(run) : run());
    } finally {
      conn.closeSync();
    }
  }

  async setup(): Promise<void> {
    const c = await this.connection();
    await c.run(`CREATE SCHEMA IF NOT EXISTS ${this.catalog}._tributary`);
    const offsets = `${this.catalog}._tributary.warehouse_offsets`;
    const columns = `destination VARCHAR NOT NULL, next_offset BIGINT NOT NULL, updated_at TIMESTAMPTZ NOT NULL,
      workspace VARCHAR NOT NULL DEFAULT '', log_id VARCHAR NOT NULL DEFAULT '',
      PRIMARY KEY (destination, workspace, log_id)`;
    await c.run(`CREATE TABLE IF NOT EXISTS ${offsets} (${columns})`);
    const scoped = await c.runAndReadAll(
      `SELECT count(*) FROM duckdb_columns() WHERE database_name = $1 AND schema_name = '_tributary'
       AND table_name = 'warehouse_offsets' AND column_name = 'log_id'`,
      [this.catalogName],
    );
    if (Number(scoped.getRows()[0]![0]) === 0) {
      // Keyed by destination alone before offsets had a scope (DuckDB cannot change a primary
      // key in place): the rows move to the new table with empty scopes, taken over by the
      // first workspace and log that read them.
      await c.run('BEGIN TRANSACTION');
      try {
        await c.run(`CREATE TABLE ${this.catalog}._tributary.warehouse_offsets_scoped (${columns})`);
        await c.run(`INSERT INTO ${this.catalog}._tributary.warehouse_offsets_scoped
          SELECT destination, next_offset, updated_at, '', '' FROM ${offsets}`);
        await c.run(`DROP TABLE ${offsets}`);
        await c.run(
          `ALTER TABLE ${this.catalog}._tributary.warehouse_offsets_scoped RENAME TO warehouse_offsets`,
        );
        await c.run('COMMIT');
      } catch (err) {
        await c.run('ROLLBACK').catch(() => undefined);
        throw err;
      }
    }
    await c.run(`CREATE TABLE IF NOT EXISTS ${this.catalog}._tributary.warehouse_names (
      destination VARCHAR NOT NULL, batch_offset BIGINT NOT NULL, idx INTEGER NOT NULL, kind VARCHAR NOT NULL,
      key VARCHAR NOT NULL, schema_name VARCHAR NOT NULL, table_name VARCHAR, name VARCHAR NOT NULL,
      type VARCHAR, recorded_at TIMESTAMPTZ NOT NULL)`);
  }

  async readState(destination: string, offsetKey = destination, scope?: OffsetScope): Promise<EngineState> {
    const c = await this.connection();
    const ws = scope?.workspace ?? '';
    const log = scope?.logId ?? '';
    const o = await c.runAndReadAll(
      `SELECT workspace, log_id, next_offset FROM ${this.catalog}._tributary.warehouse_offsets
       WHERE destination = $1 AND workspace IN ($2, '')`,
      [offsetKey, ws],
    );
    const state = scopedOffset(
      o.getRows().map(([workspace, log_id, next_offset]) => ({
        workspace: String(workspace),
        log_id: String(log_id),
        next_offset: Number(next_offset),
      })),
      ws,
      log,
    );
    if (state.claim) {
      await c.run(
        `UPDATE ${this.catalog}._tributary.warehouse_offsets SET workspace = $2, log_id = $3
         WHERE destination = $1 AND workspace = '' AND log_id = ''`,
        [offsetKey, ws, log],
      );
    }
    const n = await c.runAndReadAll(
      `SELECT kind, key, schema_name, table_name, name, type FROM ${this.catalog}._tributary.warehouse_names
       WHERE destination = $1 ORDER BY batch_offset, idx`,
      [destination],
    );
    return {
      offset: state.offset,
      foreignLogs: state.foreignLogs,
      names: n.getRows().map(([kind, key, schema, table, name, type]) => ({
        kind: kind as NameRecord['kind'],
        key: String(key),
        schema: String(schema),
        table: table === null ? null : String(table),
        name: String(name),
        type: type === null ? null : (type as ColumnType),
      })),
    };
  }

  async apply(
    destination: string,
    plans: Iterable<LoadPlan> | AsyncIterable<LoadPlan>,
    nextOffset: number,
    options: ApplyOptions = {},
  ): Promise<void> {
    const c = await this.connection();
    await c.run('BEGIN TRANSACTION');
    try {
      const names: NameRecord[] = [];
      for await (const plan of plans) {
        for (const ch of plan.changes)
          if (ch.kind !== 'create-schema') this.orders.delete(`${ch.schema}.${ch.table}`);
        const ddl = plan.changes.map((ch) => this.ddl(ch));
        if (ddl.length > 0) await c.run(ddl.join(';\n'));
        for (const [i, t] of plan.tables.entries()) await this.loadTable(c, t, `_wh_stage_${i}`);
        names.push(...plan.names);
      }
      for (let from = 0; from < names.length; from += NAMES_PER_INSERT) {
        const values: DuckDBValue[] = [];
        const tuples = names.slice(from, from + NAMES_PER_INSERT).map((r, j) => {
          values.push(
            destination,
            BigInt(nextOffset),
            from + j,
            r.kind,
            r.key,
            r.schema,
            r.table,
            r.name,
            r.type,
          );
          const b = j * 9;
          return `($${b + 1}, $${b + 2}, $${b + 3}, $${b + 4}, $${b + 5}, $${b + 6}, $${b + 7}, $${b + 8}, $${b + 9}, now())`;
        });
        await c.run(
          `INSERT INTO ${this.catalog}._tributary.warehouse_names VALUES ${tuples.join(', ')}`,
          values,
        );
      }
      await c.run(
        `INSERT OR REPLACE INTO ${this.catalog}._tributary.warehouse_offsets
           (destination, next_offset, updated_at, workspace, log_id) VALUES ($1, $2, now(), $3, $4)`,
        [
          options.offsetKey ?? destination,
          BigInt(nextOffset),
          options.scope?.workspace ?? '',
          options.scope?.logId ?? '',
        ],
      );
      if (options.commit === false) {
        this.orders.clear();
        await c.run('ROLLBACK');
        return;
      }
      await c.run('COMMIT');
    } catch (err) {
      this.orders.clear();
      await c.run('ROLLBACK').catch(() => undefined);
      throw err;
    }
  }

  async forgetForeignOffsets(offsetKey: string, scope: OffsetScope): Promise<void> {
    const c = await this.connection();
    await c.run(
      `DELETE FROM ${this.catalog}._tributary.warehouse_offsets
       WHERE destination = $1 AND workspace = $2 AND log_id <> $3`,
      [offsetKey, scope.workspace, scope.logId],
    );
  }

  private ddl(ch: SchemaChange): string {
    switch (ch.kind) {
      case 'create-schema':
        return `CREATE SCHEMA IF NOT EXISTS ${this.catalog}.${quoteIdent(ch.schema)}`;
      case 'create-table':
        return `CREATE TABLE IF NOT EXISTS ${this.table(ch.schema, ch.table)} (${ch.columns
          .map((col) => `${quoteIdent(col.name)} ${TYPES[col.type]}`)
          .join(', ')})`;
      case 'add-column':
        return `ALTER TABLE ${this.table(ch.schema, ch.table)} ADD COLUMN IF NOT EXISTS ${quoteIdent(ch.column.name)} ${TYPES[ch.column.type]}`;
      case 'widen-column':
        return `ALTER TABLE ${this.table(ch.schema, ch.table)} ALTER COLUMN ${quoteIdent(ch.column.name)} TYPE ${TYPES[ch.column.type]}`;
    }
  }

  /**
   * New rows go straight into the table with the appender, in the table's column order, after
   * one semi-join finds the ids already stored; `users` rows are staged and merged.
   */
  private async loadTable(c: DuckDBConnection, t: TableLoad, stage: string): Promise<void> {
    if (t.mode === 'upsert') return this.mergeTable(c, t, stage);
    const idAt = t.columns.findIndex((col) => col.name === 'id');
    const stored = new Set<string>();
    if (t.mode === 'insert' && idAt >= 0) {
      await c.run(`CREATE OR REPLACE TEMP TABLE ${stage} (id VARCHAR)`);
      await appendRows(
        await c.createAppender(stage, null, 'temp'),
        undefined,
        t.rows,
        1,
        (row) => row[idAt]!,
      );
      const found = await c.runAndReadAll(
        `SELECT s.id FROM temp.${stage} s SEMI JOIN ${this.table(t.schema, t.table)} t ON t.id = s.id`,
      );
      for (const [id] of found.getRows()) stored.add(String(id));
      await c.run(`DROP TABLE temp.${stage}`);
    }
    const order = await this.columnOrder(c, t.schema, t.table);
    const position = new Map(t.columns.map((col, i) => [col.name, i]));
    const from = order.map((name) => (name === 'loaded_at' ? LOADED_AT : (position.get(name) ?? -1)));
    const loadedAt = new Date().toISOString();
    const fresh = stored.size > 0 ? t.rows.filter((row) => !stored.has(row[idAt]!)) : t.rows;
    await appendRows(
      await c.createAppender(t.table, t.schema, this.catalogName),
      this.checkpoints,
      fresh,
      from.length,
      (row, k) => {
        const i = from[k]!;
        return i === LOADED_AT ? loadedAt : i < 0 ? null : row[i]!;
      },
    );
  }

  /** Columns of a table in their order (cached; the cache is dropped on DDL and failures). */
  private async columnOrder(c: DuckDBConnection, schema: string, table: string): Promise<string[]> {
    const key = `${schema}.${table}`;
    let order = this.orders.get(key);
    if (!order) {
      const r = await c.runAndReadAll(
        `SELECT column_name FROM duckdb_columns() WHERE database_name = $1 AND schema_name = $2 AND table_name = $3
         ORDER BY column_index`,
        [this.catalogName, schema, table],
      );
      order = r.getRows().map(([name]) => String(name));
      this.orders.set(key, order);
    }
    return order;
  }

  private async mergeTable(c: DuckDBConnection, t: TableLoad, stage: string): Promise<void> {
    await c.run(
      `CREATE OR REPLACE TEMP TABLE ${stage} (${t.columns.map((col) => `${quoteIdent(col.name)} VARCHAR`).join(', ')})`,
    );
    await appendRows(
      await c.createAppender(stage, null, 'temp'),
      undefined,
      t.rows,
      t.columns.length,
      (row, i) => row[i]!,
    );
    const target = this.table(t.schema, t.table);
    const names = t.columns.map((col) => quoteIdent(col.name));
    const casts = t.columns.map((col) => `CAST(s.${quoteIdent(col.name)} AS ${TYPES[col.type]})`);
    const sets = names.filter((n) => n !== '"id"').map((n) => `${n} = coalesce(s.${n}, t.${n})`);
    await c.run(`MERGE INTO ${target} t
      USING (SELECT ${casts.map((x, i) => `${x} AS ${names[i]}`).join(', ')} FROM temp.${stage} s) s
      ON t.id = s.id
      WHEN MATCHED THEN UPDATE SET ${[...sets, 'loaded_at = now()'].join(', ')}
      WHEN NOT MATCHED THEN INSERT (${[...names, 'loaded_at'].join(', ')})
        VALUES (${[...names.map((n) => `s.${n}`), 'now()'].join(', ')});
      DROP TABLE temp.${stage}`);
  }

  async close(): Promise<void> {
    this.conn?.closeSync();
    this.conn = undefined;
  }
}

/**
 * Whether a DuckDB error is about the data (a value it cannot convert or parse, a constraint)
 * rather than the engine (I/O, memory, a conflict, a table changed under it: retried). The
 * appender's conversion errors carry no type prefix ("Could not convert string …").
 */
export function duckdbRefusesData(err: unknown): boolean {
  const message = (err as Error | undefined)?.message;
  return (
    typeof message === 'string' &&
    /^((Conversion|Invalid Input|Constraint|Out of Range|Mismatch Type) Error|Could not convert|Malformed JSON)/.test(
      message,
    )
  );
}

/**
 * Appends `width` cells of each row (`cell(row, i)`: text, null as NULL) and closes the
 * appender. Its flush inserts on the event loop, so rows go in a slice of the loop at a
 * time: flushed, then requests let in. A flush into a file that `checkpoints` guards waits
 * for its running checkpoint first (a temporary table's does not need to).
 */
async function appendRows<R>(
  ap: DuckDBAppender,
  checkpoints: CheckpointGate | undefined,
  rows: readonly R[],
  width: number,
  cell: (row: R, i: number) => CellValue,
): Promise<void> {
  try {
    const slice = new Slice();
    for (const row of rows) {
      if (slice.due()) {
        if (checkpoints?.busy) await checkpoints.idle();
        ap.flushSync();
        await slice.pass();
      }
      for (let i = 0; i < width; i++) {
        const v = cell(row, i);
        if (v === null) ap.appendNull();
        else ap.appendVarchar(v);
      }
      ap.endRow();
    }
    if (checkpoints?.busy) await checkpoints.idle();
    ap.flushSync();
  } finally {
    ap.closeSync();
  }
}
