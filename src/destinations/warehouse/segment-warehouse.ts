import { TributaryError } from '../../errors.js';
import { Slice } from '../../platform/async/slice.js';
import type { RowTarget } from '../../platform/duckdb/duckdb-erase.js';
import type { StoredEvent } from '../../store/store.js';
import type {
  LoadOptions,
  LoadResult,
  OffsetScope,
  SqlEngine,
  WarehouseDestination,
  WarehouseRow,
} from '../destination.js';
import { loadIsolated } from '../isolate.js';
import { WarehouseModel } from './layout/warehouse-model.js';

export interface SegmentWarehouseOptions {
  /** Name of the destination (its names, and its offset unless `offsetKey` is given, are kept under it). */
  name: string;
  /**
   * Key of this instance's stored offset, when several instances of the destination (one per
   * log partition) load into the same tables, e.g. `pg:p3`. Default `name`.
   */
  offsetKey?: string;
  engine: SqlEngine;
  /**
   * Workspace and log the offset is stored for; offsets of another log under the same key
   * and workspace refuse the start (`TRIB_ERR_DEST_FOREIGN_OFFSETS`) unless `startOver`.
   * Default none: the offset is keyed by `offsetKey` alone.
   */
  scope?: OffsetScope;
  /**
   * Schema name of a source before folding; `{source}` stands for the source id.
   * Default `{source}`: one schema per source, as Segment names schemas after sources.
   */
  schema?: string;
  /** Column limit of a table; default the engine's (PostgreSQL 1,600). */
  maxColumns?: number;
}

/**
 * Segment-compatible tables (`tracks`, `identifies`, `users`, `pages`, `screens`, `groups`,
 * `aliases`, one table per event name, `discards`) in a SQL engine. The layout, names and
 * types are planned by the engine-independent {@link WarehouseModel}; the engine runs each
 * plan in one transaction with the offset, which makes loads exactly-once.
 */
export class SegmentWarehouse implements WarehouseDestination {
  readonly name: string;
  private model: WarehouseModel | undefined;
  /** Mark of the names the model holds, for engines that take concurrent writers. */
  private namesSeen: number | undefined;
  private ready: Promise<void> | undefined;

  constructor(private readonly options: SegmentWarehouseOptions) {
    this.name = options.name;
  }

  /**
   * Reads the stored offset and rebuilds the names and types from the engine: called on
   * start and after a failed load, so a rolled-back plan leaves nothing behind in memory.
   */
  async storedOffset(): Promise<number> {
    this.ready ??= this.options.engine.setup();
    await this.ready;
    const key = this.options.offsetKey ?? this.name;
    const scope = this.options.scope;
    let state = await this.options.engine.readState(this.name, key, scope);
    if (state.foreignLogs.length > 0 && scope) {
      if (!scope.startOver) {
        throw new TributaryError('TRIB_ERR_DEST_FOREIGN_OFFSETS', [
          this.name,
          state.foreignLogs.join(', '),
          scope.workspace,
          scope.logId,
        ]);
      }
      await this.options.engine.forgetForeignOffsets(key, scope);
      state = await this.options.engine.readState(this.name, key, scope);
    }
    const { offset, names, namesSeen } = state;
    const template = this.options.schema ?? '{source}';
    const model = new WarehouseModel({
      maxColumns: this.options.maxColumns ?? this.options.engine.maxColumns,
      maxRowBytes: this.options.engine.maxRowBytes,
      schemaFor: (source) => template.replaceAll('{source}', source),
    });
    model.restore(names);
    this.model = model;
    this.namesSeen = namesSeen;
    return offset;
  }

  /**
   * Loads in one transaction; an event the engine refuses is found by splitting the load
   * (`loadIsolated`) and left out, reported in the result.
   */
  load(events: readonly StoredEvent[], nextOffset: number, options?: LoadOptions): Promise<LoadResult> {
    return loadIsolated(this.name, events, nextOffset, options, {
      attempt: (part, commit) => this.apply(part, nextOffset, commit),
      refusesData: (err) => this.options.engine.refusesData(err),
    });
  }

  private async apply(events: readonly StoredEvent[], nextOffset: number, commit: boolean): Promise<void> {
    if (!this.model) await this.storedOffset();
    const model = this.model!;
    const part = Math.max(1, this.options.engine.planPart ?? events.length);
    // At least one plan, empty when only the offset moves. Planning lets requests in once it
    // has held the event loop for a slice of it: a part is thousands of events.
    async function* plans() {
      const slice = new Slice();
      let i = 0;
      do {
        const planner = model.planner();
        for (const end = Math.min(events.length, i + part); i < end; i++) {
          if (slice.due()) await slice.pass();
          planner.add(events[i]!);
        }
        yield planner.finish();
      } while (i < events.length);
    }
    try {
      const done = await this.options.engine.apply(this.name, plans(), nextOffset, {
        offsetKey: this.options.offsetKey ?? this.name,
        scope: this.options.scope,
        namesSeen: this.namesSeen,
        // Names other instances gave out since the model was read: planned on, never given twice.
        catchUp: (names) => model.restore(names),
        commit,
      });
      if (!commit)
        this.model = undefined; // rolled back: the plan's names too
      else if (done) this.namesSeen = done.namesSeen;
    } catch (err) {
      this.model = undefined; // the plan's names were rolled back with it
      throw err;
    }
  }

  /** Looks the event's rows up by id in the tables the model named for it. */
  async rowsOf(event: StoredEvent): Promise<WarehouseRow[]> {
    const engine = this.options.engine;
    if (!engine.selectById) return [];
    if (!this.model) await this.storedOffset();
    let parsed: unknown;
    try {
      parsed = JSON.parse(event.json);
    } catch {
      return [];
    }
    if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) return [];
    const out: WarehouseRow[] = [];
    for (const t of this.model?.tablesOf(
      event.sourceId,
      parsed as Record<string, unknown>,
      event.messageId,
    ) ?? []) {
      for (const row of await engine.selectById(t.schema, t.table, t.id))
        out.push({ schema: t.schema, table: t.table, row });
    }
    return out;
  }

  /** Deletes a person's rows from the destination's tables (see `SqlEngine.erase`). */
  async erase(target: RowTarget): Promise<number> {
    if (!this.options.engine.erase) throw new Error(`destination ${this.name}: its engine cannot erase rows`);
    this.ready ??= this.options.engine.setup();
    await this.ready;
    return this.options.engine.erase(target);
  }

  close(): Promise<void> {
    return this.options.engine.close();
  }
}
