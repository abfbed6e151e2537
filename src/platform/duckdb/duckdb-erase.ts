import type { DuckDBConnection } from '@duckdb/node-api';
import { quoteIdent } from './duckdb-sql.js';

/**
 * Deleting rows in DuckDB does not remove their bytes: a DELETE only marks the rows, and a
 * checkpoint keeps a row group that still holds live rows as it is (with a deletion mark), and
 * frees the blocks of dropped row groups without overwriting them (seen in a test: a deleted
 * value was still in the file after DELETE and CHECKPOINT). Erasure must leave no trace, so:
 *
 * 1. {@link eraseRows} writes the table anew without the rows, and drops the old one.
 * 2. {@link scrubFreeBlocks} checkpoints, then fills the file's free blocks with random data
 *    (a table sized to them, dropped afterwards), so the dropped row groups' blocks are overwritten.
 *
 * Each runs on a connection of its own; a checkpoint refused because another write is open
 * throws, and the caller (the deletion worker) tries again later.
 */

/**
 * Deletes the rows of `table` (`"catalog"."schema"."name"`, quoted) where `match` (an SQL
 * condition over its columns, with the parameters `params`) holds, by writing the table anew:
 * a table of the same definition (`duckdb_tables().sql`: types, NOT NULL, compression) gets
 * the rows kept, in their order, then replaces the old one, in one transaction. A rewrite in
 * place (delete every row, append the kept ones) was tried first: the rows went, but the
 * table's column statistics kept the deleted values (`Max: victim-…`) in the file. Returns the
 * rows deleted. Prepared statements and appenders on the table must be made again afterwards.
 */
export async function eraseRows(
  conn: DuckDBConnection,
  table: { catalog: string; schema: string; name: string },
  match: string,
  params: (string | number | boolean | null)[],
  options: { force?: boolean } = {},
): Promise<number> {
  const qualified = `${quoteIdent(table.catalog)}.${quoteIdent(table.schema)}.${quoteIdent(table.name)}`;
  const first = await conn.runAndReadAll(`SELECT count(*) FROM ${qualified} WHERE ${match}`, params);
  const count = Number(first.getRows()[0]?.[0] ?? 0);
  if (count === 0 && !options.force) return 0;
  const ddl = await conn.runAndReadAll(
    'SELECT sql FROM duckdb_tables() WHERE database_name = $1 AND schema_name = $2 AND table_name = $3',
    [table.catalog, table.schema, table.name],
  );
  const sql = String(ddl.getRows()[0]?.[0] ?? '');
  const body = sql.indexOf('(');
  if (!sql.startsWith('CREATE TABLE') || body < 0)
    throw new Error(`cannot read the definition of ${qualified}`);
  const fresh = `_tributary_erase_${Date.now()}_${Math.floor(Math.random() * 1e6)}`;
  const freshQualified = `${quoteIdent(table.catalog)}.${quoteIdent(table.schema)}.${quoteIdent(fresh)}`;
  await conn.run('BEGIN TRANSACTION');
  try {
    await conn.run(`CREATE TABLE ${freshQualified}${sql.slice(body).replace(/;\s*$/, '')}`);
    await conn.run(
      `INSERT INTO ${freshQualified} SELECT * FROM ${qualified} WHERE NOT coalesce((${match}), false) ORDER BY rowid`,
      params,
    );
    await conn.run(`DROP TABLE ${qualified}`);
    await conn.run(`ALTER TABLE ${freshQualified} RENAME TO ${quoteIdent(table.name)}`);
    await conn.run('COMMIT');
  } catch (err) {
    await conn.run('ROLLBACK').catch(() => undefined);
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
  await checkpoint(conn, db);
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
    await checkpoint(conn, db);
    await conn.run(`DROP TABLE ${scrub}`);
    await checkpoint(conn, db);
  }
  await scrubFreeMetadata(conn, catalog);
}

/**
 * Metadata (table definitions, row group pointers, column statistics, which hold the min and
 * max of each column: a deleted value can be one) lives in 4 KB sub-blocks of metadata blocks;
 * sub-blocks freed by a checkpoint are not overwritten either, and are not among the free
 * blocks above. Tables of many text columns holding random values write metadata (their
 * columns' statistics) until DuckDB reports no free sub-block, then are dropped.
 */
async function scrubFreeMetadata(conn: DuckDBConnection, catalog: string): Promise<void> {
  const db = quoteIdent(catalog);
  const r = await conn.runAndReadAll('SELECT coalesce(sum(free_blocks), 0) FROM pragma_metadata_info($1)', [
    catalog,
  ]);
  const free = Number(r.getRows()[0]?.[0] ?? 0);
  if (free === 0) return;
  // About 40 bytes of statistics per column (two 8-byte prefixes, flags, lengths): enough
  // columns for twice the free sub-blocks, written by one checkpoint.
  const columns = Math.ceil((free * 4096 * 2) / 40);
  const tables = Math.ceil(columns / 1000);
  const cols = Array.from(
    { length: 1000 },
    (_, i) => `sha256(CAST(random() AS VARCHAR) || '${i}') AS c${i}`,
  ).join(', ');
  const made: string[] = [];
  try {
    for (let t = 0; t < tables; t++) {
      const name = `${db}.main.${quoteIdent(`_tributary_scrub_meta_${t}`)}`;
      made.push(name);
      await conn.run(`CREATE OR REPLACE TABLE ${name} AS SELECT ${cols}`);
    }
    await checkpoint(conn, db);
  } finally {
    for (const name of made) await conn.run(`DROP TABLE IF EXISTS ${name}`);
    await checkpoint(conn, db);
  }
}

/**
 * A checkpoint, tried again for up to about 5 s while DuckDB refuses it because another
 * connection's write transaction is open (a load between two batches is short); then the
 * refusal is thrown and the deletion step tried again later. (`FORCE CHECKPOINT` would abort
 * those transactions.)
 */
async function checkpoint(conn: DuckDBConnection, db: string): Promise<void> {
  for (let i = 0; ; i++) {
    try {
      await conn.run(`CHECKPOINT ${db}`);
      return;
    } catch (err) {
      if (i >= 50 || !/other write transactions active/.test((err as Error).message)) throw err;
      await new Promise((r) => setTimeout(r, 100));
    }
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
 * caller overwrites the file's free blocks ({@link scrubFreeBlocks}). Returns the rows erased.
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
    if (have.has('id'))
      when.push(`${inList('CAST(id AS VARCHAR)', 3)} OR ${inList('CAST(id AS VARCHAR)', 1)}`);
    // DuckDB refuses parameters a statement does not use: number those used anew.
    const used: number[] = [];
    const match = when.join(' OR ').replace(/\$(\d)/g, (_m, d: string) => {
      const i = Number(d);
      if (!used.includes(i)) used.push(i);
      return `$${used.indexOf(i) + 1}`;
    });
    n += await eraseRows(
      conn,
      { catalog, schema: String(schema), name: String(table) },
      match,
      used.map((i) => p[i - 1]!),
    );
  }
  return n;
}
