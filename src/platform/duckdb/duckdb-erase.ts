import type { DuckDBConnection } from '@duckdb/node-api';
import { quoteIdent } from './duckdb-sql.js';

/**
 * Deleting rows in DuckDB does not remove their bytes: a DELETE only marks the rows, and a
 * checkpoint keeps a row group that still holds live rows as it is (with a deletion mark), and
 * frees the blocks of dropped row groups without overwriting them (seen in a test: a deleted
 * value was still in the file after DELETE and CHECKPOINT). Erasure must leave no trace, so:
 *
 * 1. {@link eraseRows} rewrites the table from the first row group holding a matching row on:
 *    the rows kept are copied out, every row from there deleted (whole row groups, which the
 *    checkpoint drops) and the kept rows appended again in their order (tables here are
 *    appended in log order, and a rewrite of the tail keeps it).
 * 2. {@link scrubFreeBlocks} checkpoints, then fills the file's free blocks with random data
 *    (a table sized to them, dropped afterwards), so the dropped row groups' blocks are overwritten.
 *
 * Each runs on a connection of its own; a checkpoint refused because another write is open
 * throws, and the caller (the deletion worker) tries again later.
 */

/** DuckDB's rows per row group (the default of `row_group_size`). */
const ROW_GROUP = 122_880;

/**
 * Deletes the rows of `table` where `match` (an SQL condition over its columns, with the
 * parameters `params`) holds, rewriting the row groups after the first match; returns the
 * rows deleted. Runs in one transaction.
 */
export async function eraseRows(
  conn: DuckDBConnection,
  table: string,
  match: string,
  params: (string | number | boolean | null)[],
  opts: { whole?: boolean } = {},
): Promise<number> {
  const first = await conn.runAndReadAll(`SELECT min(rowid), count(*) FROM ${table} WHERE ${match}`, params);
  const [minRow, n] = first.getRows()[0]!;
  const count = Number(n ?? 0);
  if (count === 0 || minRow === null) return 0;
  const from = opts.whole ? 0 : Math.floor(Number(minRow) / ROW_GROUP) * ROW_GROUP;
  const tmp = quoteIdent(`_tributary_erase_${process.pid}_${Date.now()}`);
  await conn.run('BEGIN TRANSACTION');
  try {
    await conn.run(
      `CREATE TEMP TABLE ${tmp} AS SELECT * FROM ${table} WHERE rowid >= ${from} AND NOT coalesce((${match}), false) ORDER BY rowid`,
      params,
    );
    await conn.run(`DELETE FROM ${table} WHERE rowid >= ${from}`);
    await conn.run(`INSERT INTO ${table} SELECT * FROM ${tmp}`);
    await conn.run(`DROP TABLE ${tmp}`);
    await conn.run('COMMIT');
  } catch (err) {
    await conn.run('ROLLBACK').catch(() => undefined);
    await conn.run(`DROP TABLE IF EXISTS ${tmp}`).catch(() => undefined);
    throw err;
  }
  return count;
}

/**
 * Checkpoints database `catalog` and overwrites its free blocks with random bytes (up to
 * three rounds, until DuckDB reports none free), leaving no deleted row readable in the file.
 */
export async function scrubFreeBlocks(conn: DuckDBConnection, catalog: string): Promise<void> {
  const db = quoteIdent(catalog);
  await conn.run(`CHECKPOINT ${db}`);
  const scrub = `${db}.main.${quoteIdent('_tributary_scrub')}`;
  for (let round = 0; round < 3; round++) {
    const r = await conn.runAndReadAll(
      'SELECT block_size, free_blocks FROM pragma_database_size() WHERE database_name = $1',
      [catalog],
    );
    const [blockSize, free] = (r.getRows()[0] ?? [0, 0]).map(Number) as [number, number];
    if (free === 0) return;
    // 64 hex characters of a fresh digest per row: nothing for DuckDB's compression to shrink.
    const rows = Math.ceil((free * blockSize * 1.25) / 64) + 1024;
    await conn.run(
      `CREATE OR REPLACE TABLE ${scrub} AS SELECT sha256(CAST(random() AS VARCHAR) || CAST(i AS VARCHAR)) AS x FROM range(${rows}) r(i)`,
    );
    await conn.run(`CHECKPOINT ${db}`);
    await conn.run(`DROP TABLE ${scrub}`);
    await conn.run(`CHECKPOINT ${db}`);
  }
}

/** A condition: `column` is one of the strings in parameter `$n` (a JSON array). */
export function inList(column: string, n: number): string {
  return `list_contains(CAST(CAST($${n} AS JSON) AS VARCHAR[]), ${column})`;
}

/** A condition: `text` contains one of the strings in parameter `$n` (a JSON array). */
export function containsAny(text: string, n: number): string {
  return `EXISTS (SELECT 1 FROM unnest(CAST(CAST($${n} AS JSON) AS VARCHAR[])) AS _v(v) WHERE contains(${text}, _v.v))`;
}

/** What {@link eraseTables} looks for (see `ErasureTarget` in src/governance/privacy/erasure.ts). */
export interface RowTarget {
  userIds: string[];
  anonymousIds: string[];
  messageIds: string[];
  values: string[];
}

/**
 * Erases matching rows from every table of `catalog` in a schema `schemas` accepts: rows whose
 * `user_id`, `anonymous_id` or `id` names the person (an `id` that is one of their messageIds
 * or user ids: the Segment tables and `users`), or whose text (the row cast to text) contains
 * one of `target.values`. Each table holding one is rewritten ({@link eraseRows}), then the
 * file's free blocks are overwritten. Returns the rows erased.
 */
export async function eraseTables(
  conn: DuckDBConnection,
  catalog: string,
  schemas: (schema: string) => boolean,
  target: RowTarget,
): Promise<number> {
  const cols = await conn.runAndReadAll(
    `SELECT c.schema_name, c.table_name, list(lower(c.column_name))
     FROM duckdb_columns() c JOIN duckdb_tables() t USING (database_name, schema_name, table_name)
     WHERE c.database_name = $1 AND NOT t.temporary GROUP BY ALL`,
    [catalog],
  );
  const p = [
    JSON.stringify(target.userIds),
    JSON.stringify(target.anonymousIds),
    JSON.stringify(target.messageIds),
    JSON.stringify(target.values),
  ];
  let n = 0;
  for (const [schema, table, columns] of cols.getRows()) {
    if (!schemas(String(schema))) continue;
    const have = new Set((columns as { items: unknown[] }).items.map(String));
    const when: string[] = [containsAny(`CAST(${quoteIdent(String(table))} AS VARCHAR)`, 4)];
    if (have.has('user_id')) when.push(inList('CAST(user_id AS VARCHAR)', 1));
    if (have.has('anonymous_id')) when.push(inList('CAST(anonymous_id AS VARCHAR)', 2));
    if (have.has('id')) when.push(`${inList('CAST(id AS VARCHAR)', 3)} OR ${inList('CAST(id AS VARCHAR)', 1)}`);
    const name = `${quoteIdent(catalog)}.${quoteIdent(String(schema))}.${quoteIdent(String(table))}`;
    // DuckDB refuses parameters a statement does not use: number those used anew.
    const used: number[] = [];
    const match = when.join(' OR ').replace(/\$(\d)/g, (_m, d: string) => {
      const i = Number(d);
      if (!used.includes(i)) used.push(i);
      return `$${used.indexOf(i) + 1}`;
    });
    n += await eraseRows(
      conn,
      name,
      match,
      used.map((i) => p[i - 1]!),
      { whole: true },
    );
  }
  if (n > 0) await scrubFreeBlocks(conn, catalog);
  return n;
}
