import type { Delivery, DeliveryOp, IdentityRef, SendResult, StreamDestination } from '../stream.js';
import { abortedText, failedResult, retryableResult, untilAborted } from '../stream-support.js';
import { type Column, encodeRow, type TableFields, tableColumns } from './table-mapping.js';

/**
 * What a database engine gives the upsert destination: its SQL for the four statements, a way
 * to run one, and which of its errors belong to one row (a value the table refuses: the row is
 * `failed`) rather than to the connection or the table (everything `retryable`).
 */
export interface UpsertDialect {
  /** Multi-row insert; `upsert` updates the non-key columns of rows whose key exists, `insert` leaves them. */
  insertSql(columns: readonly Column[], rows: number, mode: 'upsert' | 'insert'): string;
  /** Updates the non-key columns of the row with the key; undefined when there are none. */
  updateSql(columns: readonly Column[]): string | undefined;
  /** Deletes the row with the key (parameters: the key columns' values). */
  deleteSql(keyColumns: readonly Column[]): string;
  /** Deletes the rows whose `column` holds the value (one parameter). */
  deleteWhereSql(column: string): string;
  /** Creates the table when it does not exist. */
  createTableSql(columns: readonly Column[]): string;
  /** Runs one statement (autocommit); resolves with the rows it changed. */
  run(sql: string, params: readonly unknown[]): Promise<number>;
  /** Whether an error of a statement is the row's (a data or constraint error), not the connection's. */
  isRowError(err: unknown): boolean;
  /** Most parameters one statement takes. */
  maxParams: number;
  close(): Promise<void>;
}

type Encoded = { i: number; op: DeliveryOp; values: unknown[]; keyText: string };

/**
 * Upserts deliveries into one table by key. A batch goes as few statements as its operations
 * allow: consecutive upserts (events) or inserts with distinct keys make one multi-row
 * statement; when that statement is refused for a row's data, its rows are sent one by one so
 * only the bad row is `failed`. Every statement commits on its own, so what ran is kept: on a
 * lost connection the rows before it are `ok` and the rest `retryable`.
 */
export class SqlUpsertDestination implements StreamDestination {
  private readonly columns: Column[];
  private readonly keyColumns: Column[];
  private tableReady: Promise<void> | undefined;

  constructor(
    readonly id: string,
    private readonly fields: TableFields,
    private readonly dialect: UpsertDialect,
  ) {
    this.columns = tableColumns(fields);
    this.keyColumns = this.columns.filter((c) => c.key);
  }

  async send(batch: readonly Delivery[], signal: AbortSignal): Promise<SendResult[]> {
    const results: (SendResult | undefined)[] = new Array(batch.length).fill(undefined);
    const rows: Encoded[] = [];
    batch.forEach((d, i) => {
      const row = encodeRow(this.columns, d);
      if ('error' in row)
        results[i] = failedResult('TRIB_ERR_DEST_PAYLOAD_UNENCODABLE', [this.id, row.error]);
      else rows.push({ i, op: d.op, values: row.values, keyText: row.keyText });
    });
    const work = this.write(rows, results, signal);
    const outcome = await untilAborted(
      work.then(
        () => undefined,
        (err: unknown) => err,
      ),
      signal,
      () => new Error(abortedText(signal)),
    );
    // Rows the write did not reach (a lost connection, a table that is not there, an abort).
    return results.map((r) => r ?? retryableResult(outcome ?? 'not sent'));
  }

  /** Writes the rows in order, filling `results`; throws on the first error that is not a row's. */
  private async write(
    rows: Encoded[],
    results: (SendResult | undefined)[],
    signal: AbortSignal,
  ): Promise<void> {
    if (rows.length === 0) return;
    await this.ensureTable();
    for (const run of this.runs(rows)) {
      if (signal.aborted) return;
      if (run.length > 1) {
        try {
          await this.dialect.run(
            this.dialect.insertSql(this.columns, run.length, run[0]!.op === 'insert' ? 'insert' : 'upsert'),
            run.flatMap((r) => r.values),
          );
          for (const r of run) results[r.i] = { status: 'ok', detail: r.keyText };
          continue;
        } catch (err) {
          if (!this.dialect.isRowError(err)) throw err;
          // One of them is refused: find it by sending them one by one.
        }
      }
      for (const r of run) {
        if (signal.aborted) return;
        results[r.i] = await this.writeOne(r);
      }
    }
  }

  private async writeOne(r: Encoded): Promise<SendResult> {
    try {
      const n = await this.statement(r);
      return { status: 'ok', detail: n === 0 && r.op !== 'insert' ? `${r.keyText} (no row)` : r.keyText };
    } catch (err) {
      if (!this.dialect.isRowError(err)) throw err;
      return failedResult('TRIB_ERR_DEST_ROW_REFUSED', [this.id, (err as Error).message.slice(0, 300)]);
    }
  }

  private statement(r: Encoded): Promise<number> {
    const nKey = this.keyColumns.length;
    if (r.op === 'delete')
      return this.dialect.run(this.dialect.deleteSql(this.keyColumns), r.values.slice(0, nKey));
    if (r.op === 'update') {
      const sql = this.dialect.updateSql(this.columns);
      if (sql === undefined) return Promise.resolve(0);
      // SET the non-key columns, WHERE the key columns.
      return this.dialect.run(sql, [...r.values.slice(nKey), ...r.values.slice(0, nKey)]);
    }
    return this.dialect.run(
      this.dialect.insertSql(this.columns, 1, r.op === 'insert' ? 'insert' : 'upsert'),
      r.values,
    );
  }

  /**
   * Consecutive rows that can go as one statement: inserts or upserts, distinct keys (a
   * statement cannot change one row twice), within the parameter limit. Updates and deletes
   * go one by one.
   */
  private *runs(rows: Encoded[]): Generator<Encoded[]> {
    const maxRows = Math.max(1, Math.floor(this.dialect.maxParams / this.columns.length));
    let run: Encoded[] = [];
    let keys = new Set<string>();
    const kind = (op: DeliveryOp) =>
      op === 'insert' ? 'insert' : op === 'event' || op === 'upsert' ? 'upsert' : op;
    for (const r of rows) {
      const k = kind(r.op);
      const joins =
        run.length > 0 &&
        (k === 'insert' || k === 'upsert') &&
        kind(run[0]!.op) === k &&
        !keys.has(r.keyText) &&
        run.length < maxRows;
      if (!joins && run.length > 0) {
        yield run;
        run = [];
        keys = new Set();
      }
      run.push(r);
      keys.add(r.keyText);
    }
    if (run.length > 0) yield run;
  }

  private ensureTable(): Promise<void> {
    if (!this.fields.createTable) return Promise.resolve();
    if (this.tableReady === undefined) {
      this.tableReady = this.dialect.run(this.dialect.createTableSql(this.columns), []).then(() => undefined);
      // A failure (the server down) is tried again at the next send.
      this.tableReady.catch(() => {
        this.tableReady = undefined;
      });
    }
    return this.tableReady;
  }

  async deleteIdentities(identities: readonly IdentityRef[], signal: AbortSignal): Promise<SendResult> {
    const work = (async (): Promise<SendResult> => {
      let deleted = 0;
      for (const { type, value } of identities) {
        const column = this.fields.identityColumns[type];
        if (column === undefined) continue;
        deleted += await this.dialect.run(this.dialect.deleteWhereSql(column), [value]);
      }
      return { status: 'ok', detail: `${deleted} rows deleted` };
    })();
    try {
      return await untilAborted(work, signal, () => ({ status: 'retryable', error: abortedText(signal) }));
    } catch (err) {
      return retryableResult(err);
    }
  }

  close(): Promise<void> {
    return this.dialect.close();
  }
}
