import { NameRegistry, sanitizeName } from '../naming.js';
import {
  CORE_COLUMNS,
  DISCARDS_TABLE,
  type LayoutRow,
  layoutEvent,
  OVERFLOW_COLUMN,
  STANDARD_TABLES,
} from './segment-layout.js';
import {
  type CellValue,
  type ColumnType,
  canonicalTimestamp,
  castCell,
  castFailure,
  inferType,
  widen,
} from './types.js';

/**
 * What the warehouse holds, as names and types, and the planning of a load: which schemas,
 * tables and columns to create or widen, and the rows as text per column. Pure and
 * engine-independent; the adapters run the plan in one transaction.
 */

export interface ColumnDef {
  name: string;
  type: ColumnType;
}

/** A name given out, as recorded in the warehouse (`_tributary.warehouse_names`). */
export interface NameRecord {
  kind: 'schema' | 'table' | 'column';
  /** Source id (schema), table key (table) or column key (column). */
  key: string;
  schema: string;
  table: string | null;
  name: string;
  type: ColumnType | null;
}

export type SchemaChange =
  | { kind: 'create-schema'; schema: string }
  | { kind: 'create-table'; schema: string; table: string; columns: ColumnDef[]; upsert: boolean }
  | { kind: 'add-column'; schema: string; table: string; column: ColumnDef }
  | { kind: 'widen-column'; schema: string; table: string; column: ColumnDef };

export interface TableLoad {
  schema: string;
  table: string;
  /**
   * `insert`: rows whose `id` is not stored yet; `upsert`: merged into the row with the same
   * `id`, a null keeping the stored value; `append`: every row (`discards`).
   */
  mode: 'insert' | 'upsert' | 'append';
  columns: ColumnDef[];
  /** One array per row, values in `columns` order, as text the engine casts. */
  rows: CellValue[][];
}

export interface DiscardRow {
  table: string;
  column: string;
  rowId: string;
  value: string;
  reason: string;
  receivedAt: string | null;
}

export interface LoadPlan {
  changes: SchemaChange[];
  tables: TableLoad[];
  /** Discarded values, per schema. */
  discards: Map<string, DiscardRow[]>;
  /** Names given out by this plan, to record in the same transaction. */
  names: NameRecord[];
}

/** An event as the feed hands it over. */
export interface ModelEvent {
  sourceId: string;
  messageId: string;
  json: string;
}

interface TableState {
  name: string;
  upsert: boolean;
  columns: NameRegistry;
  types: Map<string, ColumnType>;
  /** Names of core columns (properties folding to one are dropped). */
  core: Set<string>;
  /** Column names by context path and by property path (a cache of `columns`). */
  contextNames: Map<string, string>;
  propertyNames: Map<string, string>;
}

interface SchemaState {
  name: string;
  tables: NameRegistry;
  states: Map<string, TableState>;
  /** The table of an event name: what the `event` column of `tracks` says. */
  eventTable: (name: string) => string;
}

function newSchema(name: string): SchemaState {
  const tables = standardTables();
  return {
    name,
    tables,
    states: new Map(),
    eventTable: (event) =>
      tables.get(`event:${event}`) ?? tables.assign(`event:${event}`, sanitizeName(event)),
  };
}

/**
 * Schemas a source never gets: the engines' own, and DuckDB's `main`, where the embedded
 * warehouse keeps `events` (a source named `main` gets `main_<hash>`).
 */
const RESERVED_SCHEMAS = ['main', 'temp', 'information_schema', 'pg_catalog', 'pg_toast', '_tributary'];

export const DISCARDS_COLUMNS: ColumnDef[] = [
  { name: 'table_name', type: 'varchar' },
  { name: 'column_name', type: 'varchar' },
  { name: 'row_id', type: 'varchar' },
  { name: 'value', type: 'varchar' },
  { name: 'reason', type: 'varchar' },
  { name: 'received_at', type: 'timestamp' },
  { name: 'loaded_at', type: 'timestamp' },
];

export interface WarehouseModelOptions {
  /** Most columns a table may have, the overflow column included (PostgreSQL: 1,600). */
  maxColumns: number;
  /** Schema name of a source, before folding. Default: the source id. */
  schemaFor?: (sourceId: string) => string;
  /**
   * Most bytes the values of one row may take (PostgreSQL: a row must fit in its 8 KB page,
   * so 1,100 numbers do not, though 1,600 columns may exist). Values past it go to
   * `_overflow`, like properties past `maxColumns`, even when their column exists. Each value
   * is counted as PostgreSQL stores it at most: 8 bytes for a number, time or boolean (its
   * alignment included), a text or JSON value up to 24 (longer ones are moved out of the
   * row as an 18-byte pointer). Default: no limit.
   */
  maxRowBytes?: number;
}

/** Bytes a core column's value is counted for against `maxRowBytes` (the most a value takes). */
const CORE_CELL_BYTES = 24;

/** Bytes a value of `type` takes in a row at most, by the estimate of `maxRowBytes`. */
function cellBytes(type: ColumnType, value: unknown): number {
  if (type !== 'varchar' && type !== 'json') return 8;
  if (typeof value !== 'string') return 24;
  return Math.min(24, Math.max(8, value.length * 3 + 4));
}

export class WarehouseModel {
  private readonly schemas = new Map<string, SchemaState>();
  private readonly schemaNames = new NameRegistry();
  private readonly schemaFor: (sourceId: string) => string;

  constructor(private readonly options: WarehouseModelOptions) {
    if (options.maxColumns < 16) throw new Error('maxColumns must be at least 16');
    this.schemaFor = options.schemaFor ?? ((id) => id);
    for (const name of RESERVED_SCHEMAS) this.schemaNames.restore(`reserved:${name}`, name);
  }

  /** Loads names recorded by earlier loads, in the order they were given out. */
  restore(records: readonly NameRecord[]): void {
    for (const r of records) {
      if (r.kind !== 'schema') continue;
      this.schemaNames.restore(r.key, r.name);
      this.schemas.set(r.key, newSchema(r.name));
    }
    const bySchema = new Map([...this.schemas.values()].map((s) => [s.name, s]));
    for (const r of records) {
      const s = bySchema.get(r.schema);
      if (r.kind !== 'table' || !s) continue;
      s.tables.restore(r.key, r.name);
      s.states.set(r.name, newTable(r.name, r.key === 'std:users'));
    }
    // Later records of a column (a widening) override earlier ones.
    for (const r of records) {
      const t = r.table === null ? undefined : bySchema.get(r.schema)?.states.get(r.table);
      if (r.kind !== 'column' || !t) continue;
      t.columns.restore(r.key, r.name);
      t.types.set(r.name, r.type ?? 'varchar');
      if (r.key.startsWith('core:')) t.core.add(r.name);
    }
  }

  /** The schema name given to a source, if it was loaded into. */
  schemaOf(sourceId: string): string | undefined {
    return this.schemas.get(sourceId)?.name;
  }

  /**
   * The tables an event's rows went to, by the names given out so far (none is given here):
   * `tracks` and the event's table for a track, `identifies` and `users` for an identify, …,
   * with the row's id (the messageId; the userId in `users`). Tables not created yet are left out.
   */
  tablesOf(
    sourceId: string,
    event: Record<string, unknown>,
    messageId: string,
  ): { schema: string; table: string; id: string }[] {
    const schema = this.schemas.get(sourceId);
    if (!schema) return [];
    const out: { schema: string; table: string; id: string }[] = [];
    for (const row of layoutEvent(event, messageId, (name) => schema.tables.get(`event:${name}`) ?? '')) {
      const table = schema.tables.get(row.tableKey);
      if (table !== undefined) out.push({ schema: schema.name, table, id: row.id });
    }
    return out;
  }

  /** Plans the load of `events`; the model then assumes the plan is committed. */
  plan(events: readonly ModelEvent[]): LoadPlan {
    const planner = this.planner();
    for (const e of events) planner.add(e);
    return planner.finish();
  }

  /**
   * A plan built one event at a time, for a caller that lets the event loop in between the
   * events; the same as `plan` of the events added. Nothing else may plan until it finishes.
   */
  planner(): { add(e: ModelEvent): void; finish(): LoadPlan } {
    const plan: LoadPlan = { changes: [], tables: [], discards: new Map(), names: [] };
    const loads = new Map<string, TableBuilder>();
    return {
      add: (e) => this.addEvent(plan, loads, e),
      finish: () => finishPlan(plan, loads),
    };
  }

  private addEvent(plan: LoadPlan, loads: Map<string, TableBuilder>, e: ModelEvent): void {
    const schema = this.schema(e.sourceId, plan);
    let parsed: Record<string, unknown>;
    try {
      parsed = JSON.parse(e.json) as Record<string, unknown>;
    } catch {
      return; // the loader only stores valid JSON
    }
    const ctx: RowContext = {
      plan,
      schema,
      rowId: e.messageId,
      receivedAt: typeof parsed.receivedAt === 'string' ? parsed.receivedAt : null,
      rowBytes: 0,
    };
    for (const row of layoutEvent(parsed, e.messageId, schema.eventTable)) {
      const table = this.table(schema, row, plan);
      const key = `${schema.name}.${table.name}`;
      let b = loads.get(key);
      if (!b) {
        b = {
          load: { schema: schema.name, table: table.name, mode: row.mode, columns: [], rows: [] },
          table,
          byId: new Map(),
          position: new Map(),
          names: [],
        };
        loads.set(key, b);
      }
      const at = b.byId.get(row.id);
      // An insert repeating an id within the batch is the same event: the first one stays.
      if (at !== undefined && row.mode !== 'upsert') continue;
      const cells = this.cells(ctx, b, row);
      if (at === undefined) {
        b.byId.set(row.id, b.load.rows.length);
        b.load.rows.push(cells);
      } else {
        const merged = b.load.rows[at]!;
        for (let i = 0; i < cells.length; i++) if (cells[i] != null) merged[i] = cells[i]!;
      }
    }
  }

  private schema(sourceId: string, plan: LoadPlan): SchemaState {
    let s = this.schemas.get(sourceId);
    if (s) return s;
    const name = this.schemaNames.assign(sourceId, sanitizeName(this.schemaFor(sourceId)));
    s = newSchema(name);
    this.schemas.set(sourceId, s);
    plan.changes.push({ kind: 'create-schema', schema: name });
    plan.names.push({ kind: 'schema', key: sourceId, schema: name, table: null, name, type: null });
    plan.changes.push({
      kind: 'create-table',
      schema: name,
      table: DISCARDS_TABLE,
      columns: DISCARDS_COLUMNS,
      upsert: false,
    });
    return s;
  }

  private table(schema: SchemaState, row: LayoutRow, plan: LoadPlan): TableState {
    const name =
      schema.tables.get(row.tableKey) ?? schema.tables.assign(row.tableKey, sanitizeName(row.tableBase));
    let t = schema.states.get(name);
    if (t) return t;
    t = newTable(name, row.mode === 'upsert');
    schema.states.set(name, t);
    const columns: ColumnDef[] = [];
    for (const c of [...Object.keys(row.core), 'loaded_at']) {
      const type = CORE_COLUMNS[c] ?? 'varchar';
      t.columns.restore(`core:${c}`, c);
      t.types.set(c, type);
      t.core.add(c);
      columns.push({ name: c, type });
      plan.names.push({ kind: 'column', key: `core:${c}`, schema: schema.name, table: name, name: c, type });
    }
    plan.changes.push({ kind: 'create-table', schema: schema.name, table: name, columns, upsert: t.upsert });
    plan.names.push({ kind: 'table', key: row.tableKey, schema: schema.name, table: name, name, type: null });
    return t;
  }

  /** The row's values in the builder's column positions, creating and widening columns as needed. */
  private cells(ctx: RowContext, b: TableBuilder, row: LayoutRow): CellValue[] {
    const table = b.table;
    const cells: CellValue[] = [];
    let core = 0;
    for (const c of Object.keys(row.core)) {
      this.put(ctx, b, cells, c, table.types.get(c) ?? CORE_COLUMNS[c] ?? 'varchar', row.core[c]);
      core++;
    }
    // The overflow column's pointer is kept free, with the core columns' values.
    ctx.rowBytes = (core + 1) * CORE_CELL_BYTES;
    let overflow: Record<string, unknown> | undefined;
    for (const [path, v] of row.context) overflow = this.dynamic(ctx, b, cells, 'ctx:', path, v, overflow);
    for (const [path, v] of row.properties)
      overflow = this.dynamic(ctx, b, cells, 'prop:', path, v, overflow);
    if (overflow) {
      if (!table.types.has(OVERFLOW_COLUMN)) {
        table.columns.restore(`core:${OVERFLOW_COLUMN}`, OVERFLOW_COLUMN);
        table.types.set(OVERFLOW_COLUMN, 'json');
        this.newColumn(
          ctx,
          table,
          `core:${OVERFLOW_COLUMN}`,
          { name: OVERFLOW_COLUMN, type: 'json' },
          'add-column',
        );
      }
      cells[positionOf(b, OVERFLOW_COLUMN)] = JSON.stringify(overflow);
    }
    return cells;
  }

  private put(
    ctx: RowContext,
    b: TableBuilder,
    cells: CellValue[],
    column: string,
    type: ColumnType,
    value: unknown,
  ): void {
    const cell = castCell(type, value);
    if (cell !== undefined) cells[positionOf(b, column)] = cell;
    else discard(ctx, b.table.name, column, value, castFailure(type, value));
  }

  /** A context or property value; returns the overflow object, created when the table is full. */
  private dynamic(
    ctx: RowContext,
    b: TableBuilder,
    cells: CellValue[],
    prefix: 'ctx:' | 'prop:',
    path: string,
    value: unknown,
    overflow: Record<string, unknown> | undefined,
  ): Record<string, unknown> | undefined {
    const table = b.table;
    // Looked up by path first: the registry's keys would need a new string per cell.
    const byPath = prefix === 'ctx:' ? table.contextNames : table.propertyNames;
    let known = byPath.get(path);
    if (known === undefined) {
      known = table.columns.get(prefix + path);
      if (known !== undefined) byPath.set(path, known);
    }
    if (known === undefined) {
      const key = prefix + path;
      const type = inferType(value);
      if (type === undefined) return overflow; // no column for a null until a value comes
      const base = sanitizeName(prefix === 'ctx:' ? `context_${path}` : path);
      if (
        prefix === 'prop:' &&
        (table.core.has(base) || base.startsWith('context_') || base === OVERFLOW_COLUMN)
      ) {
        discard(ctx, table.name, base, value, `property "${path}" has the name of a core column`);
        return overflow;
      }
      const reserve = table.types.has(OVERFLOW_COLUMN) ? 0 : 1;
      if (table.columns.size + 1 + reserve > this.options.maxColumns || !this.fits(ctx, type, value)) {
        const out = overflow ?? {};
        out[path] = value;
        return out;
      }
      const name = table.columns.assign(key, base);
      table.types.set(name, type);
      this.newColumn(ctx, table, key, { name, type }, 'add-column');
      this.put(ctx, b, cells, name, type, value);
      return overflow;
    }
    const at = b.position.get(known);
    if (at !== undefined && cells[at] !== undefined) {
      discard(
        ctx,
        table.name,
        known,
        value,
        `"${path}" folds to the same column as another key of the event`,
      );
      return overflow;
    }
    const current = table.types.get(known)!;
    if (!this.fits(ctx, current, value)) {
      const out = overflow ?? {};
      out[path] = value;
      return out;
    }
    const incoming = inferType(value);
    if (incoming !== undefined) {
      const wider = widen(current, incoming);
      if (wider !== current) {
        table.types.set(known, wider);
        this.newColumn(ctx, table, prefix + path, { name: known, type: wider }, 'widen-column');
      }
    }
    this.put(ctx, b, cells, known, table.types.get(known)!, value);
    return overflow;
  }

  /** Whether the row has room for the value under `maxRowBytes`; if so, counts it. */
  private fits(ctx: RowContext, type: ColumnType, value: unknown): boolean {
    const limit = this.options.maxRowBytes;
    if (limit === undefined) return true;
    const cost = cellBytes(type, value);
    if (ctx.rowBytes + cost > limit) return false;
    ctx.rowBytes += cost;
    return true;
  }

  private newColumn(
    ctx: RowContext,
    table: TableState,
    key: string,
    column: ColumnDef,
    kind: 'add-column' | 'widen-column',
  ): void {
    const schema = ctx.schema.name;
    ctx.plan.changes.push({ kind, schema, table: table.name, column });
    ctx.plan.names.push({
      kind: 'column',
      key,
      schema,
      table: table.name,
      name: column.name,
      type: column.type,
    });
  }
}

/** The plan's tables once every event is added: rows padded to the columns, then the discards. */
function finishPlan(plan: LoadPlan, loads: Map<string, TableBuilder>): LoadPlan {
  for (const b of loads.values()) {
    const n = b.names.length;
    b.load.columns = b.names.map((name) => ({ name, type: b.table.types.get(name) ?? 'json' }));
    for (const row of b.load.rows) {
      for (let i = 0; i < n; i++) if (row[i] === undefined) row[i] = null;
    }
    plan.tables.push(b.load);
  }
  for (const [schema, list] of plan.discards) {
    plan.tables.push({
      schema,
      table: DISCARDS_TABLE,
      mode: 'append',
      columns: DISCARDS_COLUMNS.filter((c) => c.name !== 'loaded_at'),
      rows: list.map((d) => [
        d.table,
        d.column,
        d.rowId,
        d.value,
        d.reason,
        d.receivedAt === null ? null : (canonicalTimestamp(d.receivedAt) ?? null),
      ]),
    });
  }
  return plan;
}

/** The rows of one table in one plan, columns in order of first appearance. */
interface TableBuilder {
  load: TableLoad;
  table: TableState;
  /** Row index of each id. */
  byId: Map<string, number>;
  /** Position of each column in the rows. */
  position: Map<string, number>;
  names: string[];
}

function positionOf(b: TableBuilder, column: string): number {
  let at = b.position.get(column);
  if (at === undefined) {
    at = b.names.length;
    b.position.set(column, at);
    b.names.push(column);
  }
  return at;
}

interface RowContext {
  plan: LoadPlan;
  schema: SchemaState;
  rowId: string;
  receivedAt: string | null;
  /** Bytes the values of the row being built take so far (see `maxRowBytes`). */
  rowBytes: number;
}

function discard(ctx: RowContext, table: string, column: string, value: unknown, reason: string): void {
  let list = ctx.plan.discards.get(ctx.schema.name);
  if (!list) {
    list = [];
    ctx.plan.discards.set(ctx.schema.name, list);
  }
  list.push({
    table,
    column,
    rowId: ctx.rowId,
    value: typeof value === 'string' && !value.includes('\u0000') ? value : JSON.stringify(value ?? null),
    reason,
    receivedAt: ctx.receivedAt,
  });
}

function newTable(name: string, upsert: boolean): TableState {
  return {
    name,
    upsert,
    columns: new NameRegistry(),
    types: new Map(),
    core: new Set(),
    contextNames: new Map(),
    propertyNames: new Map(),
  };
}

/** A schema's table registry, with the standard names and `discards` taken. */
function standardTables(): NameRegistry {
  const r = new NameRegistry();
  for (const t of STANDARD_TABLES) r.restore(`std:${t}`, t);
  r.restore('std:discards', DISCARDS_TABLE);
  return r;
}
