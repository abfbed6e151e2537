import type { DuckDBConnection, DuckDBInstance, DuckDBValue } from '@duckdb/node-api';
import { quoteIdent } from '../../duckdb-sql.js';
import type { SqlEngine } from '../destination.js';
import type { ColumnType } from '../layout/types.js';
import type { LoadPlan, NameRecord, SchemaChange, TableLoad } from '../layout/warehouse-model.js';

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
}

/**
 * Segment tables in DuckDB, on a connection of its own to a shared instance (the embedded
 * warehouse file is open once per process). Rows are appended to a temporary staging table
 * with DuckDB's appender, then inserted where their `id` is not stored yet (an anti-join:
 * an ART primary key gets slower with every batch, see docs/architecture.md), or merged
 * into `users`.
 */
export class DuckDBEngine implements SqlEngine {
  readonly maxColumns: number;
  private conn: DuckDBConnection | undefined;
  private readonly catalog: string;

  constructor(
    private readonly instance: DuckDBInstance,
    options: DuckDBEngineOptions,
  ) {
    this.catalog = quoteIdent(options.catalog);
    this.maxColumns = options.maxColumns ?? 1600;
  }

  private async connection(): Promise<DuckDBConnection> {
    this.conn ??= await this.instance.connect();
    return this.conn;
  }

  private table(schema: string, table: string): string {
    return `${this.catalog}.${quoteIdent(schema)}.${quoteIdent(table)}`;
  }

  async setup(): Promise<void> {
    const c = await this.connection();
    await c.run(`CREATE SCHEMA IF NOT EXISTS ${this.catalog}._tributary`);
    await c.run(`CREATE TABLE IF NOT EXISTS ${this.catalog}._tributary.warehouse_offsets (
      destination VARCHAR PRIMARY KEY, next_offset BIGINT NOT NULL, updated_at TIMESTAMPTZ NOT NULL)`);
    await c.run(`CREATE TABLE IF NOT EXISTS ${this.catalog}._tributary.warehouse_names (
      destination VARCHAR NOT NULL, batch_offset BIGINT NOT NULL, idx INTEGER NOT NULL, kind VARCHAR NOT NULL,
      key VARCHAR NOT NULL, schema_name VARCHAR NOT NULL, table_name VARCHAR, name VARCHAR NOT NULL,
      type VARCHAR, recorded_at TIMESTAMPTZ NOT NULL)`);
  }

  async readState(destination: string): Promise<{ offset: number; names: NameRecord[] }> {
    const c = await this.connection();
    const o = await c.runAndReadAll(
      `SELECT next_offset FROM ${this.catalog}._tributary.warehouse_offsets WHERE destination = $1`,
      [destination],
    );
    const n = await c.runAndReadAll(
      `SELECT kind, key, schema_name, table_name, name, type FROM ${this.catalog}._tributary.warehouse_names
       WHERE destination = $1 ORDER BY batch_offset, idx`,
      [destination],
    );
    return {
      offset: Number(o.getRows()[0]?.[0] ?? 0),
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

  async apply(destination: string, plan: LoadPlan, nextOffset: number): Promise<void> {
    const c = await this.connection();
    await c.run('BEGIN TRANSACTION');
    try {
      const ddl = plan.changes.map((ch) => this.ddl(ch));
      if (ddl.length > 0) await c.run(ddl.join(';\n'));
      for (const [i, t] of plan.tables.entries()) await this.loadTable(c, t, `_wh_stage_${i}`);
      if (plan.names.length > 0) {
        const values: DuckDBValue[] = [];
        const tuples = plan.names.map((r, i) => {
          values.push(destination, BigInt(nextOffset), i, r.kind, r.key, r.schema, r.table, r.name, r.type);
          const b = i * 9;
          return `($${b + 1}, $${b + 2}, $${b + 3}, $${b + 4}, $${b + 5}, $${b + 6}, $${b + 7}, $${b + 8}, $${b + 9}, now())`;
        });
        await c.run(
          `INSERT INTO ${this.catalog}._tributary.warehouse_names VALUES ${tuples.join(', ')}`,
          values,
        );
      }
      await c.run(
        `INSERT OR REPLACE INTO ${this.catalog}._tributary.warehouse_offsets VALUES ($1, $2, now())`,
        [destination, BigInt(nextOffset)],
      );
      await c.run('COMMIT');
    } catch (err) {
      await c.run('ROLLBACK').catch(() => undefined);
      throw err;
    }
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

  private async loadTable(c: DuckDBConnection, t: TableLoad, stage: string): Promise<void> {
    await c.run(
      `CREATE OR REPLACE TEMP TABLE ${stage} (${t.columns.map((col) => `${quoteIdent(col.name)} VARCHAR`).join(', ')})`,
    );
    const ap = await c.createAppender(stage, null, 'temp');
    try {
      for (const row of t.rows) {
        for (const v of row) {
          if (v === null) ap.appendNull();
          else ap.appendVarchar(v);
        }
        ap.endRow();
      }
      ap.flushSync();
    } finally {
      ap.closeSync();
    }
    const target = this.table(t.schema, t.table);
    const names = t.columns.map((col) => quoteIdent(col.name));
    const casts = t.columns.map((col) => `CAST(s.${quoteIdent(col.name)} AS ${TYPES[col.type]})`);
    const into = `${target} (${[...names, 'loaded_at'].join(', ')})`;
    let sql: string;
    if (t.mode === 'append') {
      sql = `INSERT INTO ${into} SELECT ${casts.join(', ')}, now() FROM temp.${stage} s`;
    } else if (t.mode === 'insert') {
      sql = `INSERT INTO ${into} SELECT ${casts.join(', ')}, now() FROM temp.${stage} s
             WHERE NOT EXISTS (SELECT 1 FROM ${target} t WHERE t.id = s.id)`;
    } else {
      const sets = names.filter((n) => n !== '"id"').map((n) => `${n} = coalesce(s.${n}, t.${n})`);
      sql = `MERGE INTO ${target} t
             USING (SELECT ${casts.map((x, i) => `${x} AS ${names[i]}`).join(', ')} FROM temp.${stage} s) s
             ON t.id = s.id
             WHEN MATCHED THEN UPDATE SET ${[...sets, 'loaded_at = now()'].join(', ')}
             WHEN NOT MATCHED THEN INSERT (${[...names, 'loaded_at'].join(', ')})
               VALUES (${[...names.map((n) => `s.${n}`), 'now()'].join(', ')})`;
    }
    await c.run(`${sql};\nDROP TABLE temp.${stage}`);
  }

  async close(): Promise<void> {
    this.conn?.closeSync();
    this.conn = undefined;
  }
}
