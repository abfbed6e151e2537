import type { Socket } from 'node:net';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import pg from 'pg';
import { from as copyFrom } from 'pg-copy-streams';
import type { RowTarget } from '../../../platform/duckdb/duckdb-erase.js';
import { advisoryXactLock } from '../../../platform/postgres/advisory-locks.js';
import { pgIdent } from '../../../platform/postgres/pg-sql.js';
import type { ApplyOptions, EngineState, OffsetScope, SqlEngine } from '../../destination.js';
import type { ColumnType } from '../layout/types.js';
import type { LoadPlan, NameRecord, SchemaChange, TableLoad } from '../layout/warehouse-model.js';
import { scopedOffset } from '../offset-scope.js';

const TYPES: Record<ColumnType, string> = {
  bigint: 'bigint',
  double: 'double precision',
  boolean: 'boolean',
  timestamp: 'timestamptz',
  varchar: 'text',
  json: 'jsonb',
};

/** PostgreSQL allows 65,535 parameters per statement; a names row takes 9. */
const NAMES_PER_INSERT = 5000;

export interface PostgresEngineOptions {
  /** How to connect: `pg` client settings (a connection string or host, port, user, …). */
  connection: pg.ClientConfig;
  /** Column limit per table; PostgreSQL refuses more than 1,600. */
  maxColumns?: number;
  /** How long the destination waits for PostgreSQL; see {@link PostgresTimeouts}. */
  timeouts?: PostgresTimeouts;
}

/**
 * Bounds on every wait for PostgreSQL, so a server that stops answering (a frozen
 * connection, a lost network) fails the load, which is retried on a new connection,
 * instead of stalling the destination for good.
 */
export interface PostgresTimeouts {
  /** `statement_timeout` of the session: PostgreSQL cancels a longer statement. Default 60 s. */
  statementMs?: number;
  /** Most time to open a connection (`connectionTimeoutMillis`). Default 10 s. */
  connectMs?: number;
  /**
   * Most time a load, read or setup may go without a byte from the server (`query_timeout`,
   * and a socket timeout that also covers COPY); then the connection is closed. Longer
   * than `statementMs`, or the server's own cancellation could not arrive first.
   * Default `statementMs` + 15 s.
   */
  socketMs?: number;
}

export const POSTGRES_TIMEOUT_DEFAULTS = { statementMs: 60_000, connectMs: 10_000 } as const;

/** What a pg.Client keeps of its socket (not in its types). */
interface ClientInternals {
  connection?: { stream?: Socket };
}

/**
 * Segment tables in PostgreSQL through `pg`. Each table has `id` as its primary key; rows
 * are loaded by `COPY … FROM STDIN`, those whose id is stored already left out (`users`
 * rows merged through a staging table), in the transaction that also stores the offset.
 */
export class PostgresEngine implements SqlEngine {
  readonly maxColumns: number;
  readonly planPart = 2500;
  /**
   * A row must fit in an 8 KB page (8,160 bytes of it for the tuple, less its 24-byte header
   * and a null bitmap of up to 200 bytes); past this, values go to `_overflow`. Below the
   * 7,936 left, for alignment the estimate does not count.
   */
  readonly maxRowBytes = 7_600;
  private client: pg.Client | undefined;
  private connecting: Promise<pg.Client> | undefined;
  private readonly socketMs: number;
  private readonly clientConfig: pg.ClientConfig;

  constructor(options: PostgresEngineOptions) {
    this.maxColumns = Math.min(options.maxColumns ?? 1600, 1600);
    const statementMs = options.timeouts?.statementMs ?? POSTGRES_TIMEOUT_DEFAULTS.statementMs;
    this.socketMs = options.timeouts?.socketMs ?? statementMs + 15_000;
    this.clientConfig = {
      ...options.connection,
      statement_timeout: statementMs,
      query_timeout: this.socketMs,
      connectionTimeoutMillis: options.timeouts?.connectMs ?? POSTGRES_TIMEOUT_DEFAULTS.connectMs,
      keepAlive: true,
      keepAliveInitialDelayMillis: 10_000,
    };
  }

  /**
   * Runs `fn` on the connection with a socket timeout armed: when the server sends nothing
   * for `socketMs` (the statement timeout would have answered by then), the socket is
   * destroyed and every query on it fails. After any failure that is not the data's, the
   * connection is dropped, so the retry starts on a fresh one (a timed-out query may still
   * hold the old one).
   */
  private async guarded<T>(fn: (c: pg.Client) => Promise<T>): Promise<T> {
    const c = await this.connection();
    const socket = (c as unknown as ClientInternals).connection?.stream;
    const silent = () =>
      socket?.destroy(new Error(`PostgreSQL sent nothing for ${this.socketMs} ms; connection closed`));
    socket?.setTimeout(this.socketMs, silent);
    try {
      return await fn(c);
    } catch (err) {
      if (!this.refusesData(err)) this.drop(c);
      throw err;
    } finally {
      socket?.setTimeout(0, silent);
      socket?.off('timeout', silent);
    }
  }

  /**
   * Deletes the person's rows from every table outside `_tributary` and the system schemas
   * (on a connection of its own, so no load's transaction is touched): rows whose `user_id`,
   * `anonymous_id` or `id` names them or whose text holds one of `target.values`; then
   * `VACUUM FULL`s the tables it deleted from, which writes them anew (a plain VACUUM leaves
   * dead rows' bytes in their pages until overwritten).
   */
  async erase(target: RowTarget): Promise<number> {
    const c = new pg.Client(this.clientConfig);
    c.on('error', () => undefined);
    await c.connect();
    try {
      const tables = await c.query<{ s: string; t: string; cols: string[] }>(
        `SELECT c.table_schema AS s, c.table_name AS t, array_agg(lower(c.column_name::text)) AS cols
         FROM information_schema.columns c JOIN information_schema.tables t USING (table_schema, table_name)
         WHERE t.table_type = 'BASE TABLE' AND c.table_schema NOT IN ('information_schema', '_tributary')
           AND c.table_schema NOT LIKE 'pg\\_%'
         GROUP BY 1, 2`,
      );
      let n = 0;
      for (const { s, t, cols } of tables.rows) {
        const have = new Set(cols);
        const when = [`EXISTS (SELECT 1 FROM unnest($4::text[]) v WHERE strpos(x::text, v) > 0)`];
        if (have.has('user_id')) when.push('x.user_id::text = ANY($1::text[])');
        if (have.has('anonymous_id')) when.push('x.anonymous_id::text = ANY($2::text[])');
        if (have.has('id')) when.push('x.id::text = ANY($3::text[]) OR x.id::text = ANY($1::text[])');
        const name = `${pgIdent(s)}.${pgIdent(t)}`;
        const all = [target.userIds, target.anonymousIds, target.messageIds, target.values];
        // PostgreSQL cannot type a parameter a statement does not use: number those used anew.
        const used: number[] = [];
        const match = when.join(' OR ').replace(/\$(\d)/g, (_m, d: string) => {
          const i = Number(d);
          if (!used.includes(i)) used.push(i);
          return `$${used.indexOf(i) + 1}`;
        });
        const r = await c.query(
          `DELETE FROM ${name} AS x WHERE ${match}`,
          used.map((i) => all[i - 1]),
        );
        if ((r.rowCount ?? 0) > 0) {
          n += r.rowCount ?? 0;
          await c.query(`VACUUM FULL ${name}`);
        }
      }
      return n;
    } finally {
      await c.end().catch(() => undefined);
    }
  }

  /** Forgets a connection and closes its socket without waiting on the server. */
  private drop(c: pg.Client): void {
    if (this.client === c) this.client = undefined;
    (c as unknown as ClientInternals).connection?.stream?.destroy();
    c.end().catch(() => undefined);
  }

  private connection(): Promise<pg.Client> {
    if (this.client) return Promise.resolve(this.client);
    this.connecting ??= (async () => {
      const client = new pg.Client(this.clientConfig);
      // A broken connection is replaced on the next call; the load in flight fails and is retried.
      client.on('error', () => {
        if (this.client === client) this.client = undefined;
      });
      try {
        await client.connect();
      } catch (err) {
        await client.end().catch(() => undefined);
        throw err;
      } finally {
        this.connecting = undefined;
      }
      this.client = client;
      return client;
    })();
    return this.connecting;
  }

  /**
   * Data exceptions (SQLSTATE class 22: a value the column cannot take, invalid JSON text),
   * integrity violations (23) and program limits (54: a row or index entry too large) are
   * the data's; anything else (no SQLSTATE: the socket; 57014: a statement timeout; 08:
   * the connection; 40: serialization) is not.
   */
  refusesData(err: unknown): boolean {
    const code = (err as { code?: unknown } | undefined)?.code;
    return typeof code === 'string' && /^(22|23|54)[0-9A-Z]{3}$/.test(code);
  }

  /**
   * Creates or upgrades the bookkeeping tables. A deadlock or serialization failure against
   * another process starting or loading at the same time is tried again (up to 5 times), so it
   * does not fail the start.
   */
  async setup(): Promise<void> {
    for (let attempt = 1; ; attempt++) {
      try {
        return await this.guarded((c) => this.setupOn(c));
      } catch (err) {
        const code = (err as { code?: unknown } | undefined)?.code;
        if (attempt >= 5 || (code !== '40P01' && code !== '40001')) throw err;
        await new Promise((r) => setTimeout(r, 50 * attempt));
      }
    }
  }

  private async setupOn(c: pg.Client): Promise<void> {
    await c.query('BEGIN');
    try {
      // Several instances start at once; concurrent CREATE … IF NOT EXISTS can still collide.
      await advisoryXactLock(c, 'warehouse-setup');
      await c.query('CREATE SCHEMA IF NOT EXISTS _tributary');
      await c.query(`CREATE TABLE IF NOT EXISTS _tributary.warehouse_offsets (
        destination text NOT NULL, next_offset bigint NOT NULL, updated_at timestamptz NOT NULL,
        workspace text NOT NULL DEFAULT '', log_id text NOT NULL DEFAULT '',
        PRIMARY KEY (destination, workspace, log_id))`);
      // Versions before offsets had a scope keyed them by destination alone: their rows keep
      // empty scopes, taken over by the first workspace and log that read them. Altered only
      // when the columns are missing: an ALTER takes an exclusive lock on the table even when
      // it changes nothing, and other processes' loads hold it (a worker starting beside
      // loading ones deadlocked on it).
      const scoped = await c.query(
        `SELECT 1 FROM information_schema.columns
         WHERE table_schema = '_tributary' AND table_name = 'warehouse_offsets' AND column_name IN ('workspace', 'log_id')`,
      );
      if (scoped.rowCount !== 2) {
        await c.query(`ALTER TABLE _tributary.warehouse_offsets
          ADD COLUMN IF NOT EXISTS workspace text NOT NULL DEFAULT '',
          ADD COLUMN IF NOT EXISTS log_id text NOT NULL DEFAULT ''`);
      }
      const pk = await c.query<{ conname: string; n: number }>(
        `SELECT conname, array_length(conkey, 1) AS n FROM pg_constraint
         WHERE conrelid = '_tributary.warehouse_offsets'::regclass AND contype = 'p'`,
      );
      if (pk.rows[0] && pk.rows[0].n !== 3) {
        await c.query(`ALTER TABLE _tributary.warehouse_offsets DROP CONSTRAINT ${pgIdent(pk.rows[0].conname)},
          ADD PRIMARY KEY (destination, workspace, log_id)`);
      }
      await c.query(`CREATE TABLE IF NOT EXISTS _tributary.warehouse_names (
        destination text NOT NULL, batch_offset bigint NOT NULL, idx integer NOT NULL, kind text NOT NULL,
        key text NOT NULL, schema_name text NOT NULL, table_name text, name text NOT NULL, type text,
        recorded_at timestamptz NOT NULL, PRIMARY KEY (destination, batch_offset, idx))`);
      await c.query('COMMIT');
    } catch (err) {
      await c.query('ROLLBACK').catch(() => undefined);
      throw err;
    }
  }

  readState(destination: string, offsetKey = destination, scope?: OffsetScope): Promise<EngineState> {
    return this.guarded(async (c) => {
      const ws = scope?.workspace ?? '';
      const log = scope?.logId ?? '';
      const o = await c.query<{ workspace: string; log_id: string; next_offset: string }>(
        `SELECT workspace, log_id, next_offset FROM _tributary.warehouse_offsets
         WHERE destination = $1 AND workspace IN ($2, '')`,
        [offsetKey, ws],
      );
      const state = scopedOffset(o.rows, ws, log);
      if (state.claim) {
        // Taken over once: another workspace reading the row later finds it gone.
        const claimed = await c.query(
          `UPDATE _tributary.warehouse_offsets SET workspace = $2, log_id = $3
           WHERE destination = $1 AND workspace = '' AND log_id = ''`,
          [offsetKey, ws, log],
        );
        if (claimed.rowCount === 0) state.offset = 0;
      }
      const { names, namesSeen } = await readNames(c, destination, -1);
      return { offset: state.offset, names, namesSeen, foreignLogs: state.foreignLogs };
    });
  }

  forgetForeignOffsets(offsetKey: string, scope: OffsetScope): Promise<void> {
    return this.guarded(async (c) => {
      await c.query(
        'DELETE FROM _tributary.warehouse_offsets WHERE destination = $1 AND workspace = $2 AND log_id <> $3',
        [offsetKey, scope.workspace, scope.logId],
      );
    });
  }

  /**
   * The copies of one part are sent without waiting for them to finish: the client queues the
   * next statements behind them, and the next part is planned while PostgreSQL loads this one.
   *
   * Several instances of one destination (one per log partition, in several processes) load
   * into the same tables. Each load first takes a transaction-scoped advisory lock named
   * after the destination, then catches up on the names (tables, columns, types) the others
   * recorded, and only then plans. An advisory lock rather than row locks: what must not
   * interleave is DDL (CREATE/ALTER TABLE race on the catalog even with IF NOT EXISTS),
   * the name assignments and the id lookups before each COPY, none of which has a row to
   * lock until it is done; one lock per destination covers all of them, costs one round trip,
   * and leaves loads of other destinations and readers of the tables unblocked. Loads of one
   * destination take turns, which bulk COPYs tolerate well. The names are recorded in
   * `_tributary.warehouse_names` in the load's own transaction and numbered in commit order
   * (`batch_offset` counts up per destination), so an instance reading them after the lock
   * sees every column that exists, with the name and type it was given.
   */
  apply(
    destination: string,
    plans: Iterable<LoadPlan> | AsyncIterable<LoadPlan>,
    nextOffset: number,
    options: ApplyOptions = {},
  ): Promise<{ namesSeen: number }> {
    return this.guarded((c) => this.applyOn(c, destination, plans, nextOffset, options));
  }

  private async applyOn(
    c: pg.Client,
    destination: string,
    plans: Iterable<LoadPlan> | AsyncIterable<LoadPlan>,
    nextOffset: number,
    options: ApplyOptions,
  ): Promise<{ namesSeen: number }> {
    await c.query('BEGIN');
    const inFlight: Promise<void>[] = [];
    try {
      await advisoryXactLock(c, `warehouse:${destination}`);
      let seen = options.namesSeen ?? -1;
      if (options.catchUp && options.namesSeen !== undefined) {
        const newer = await readNames(c, destination, options.namesSeen);
        if (newer.names.length > 0) options.catchUp(newer.names);
        seen = newer.namesSeen;
      } else {
        const m = await c.query<{ m: string }>(
          'SELECT coalesce(max(batch_offset), -1) AS m FROM _tributary.warehouse_names WHERE destination = $1',
          [destination],
        );
        seen = Number(m.rows[0]!.m);
      }
      const batch = seen + 1;
      const names: NameRecord[] = [];
      let stage = 0;
      for await (const plan of plans) {
        for (const ch of plan.changes) await c.query(this.ddl(ch));
        for (const t of plan.tables) inFlight.push((await this.loadTable(c, t, `_wh_stage_${stage++}`)).done);
        names.push(...plan.names);
      }
      await Promise.all(inFlight);
      for (let from = 0; from < names.length; from += NAMES_PER_INSERT) {
        const values: unknown[] = [];
        const tuples = names.slice(from, from + NAMES_PER_INSERT).map((r, j) => {
          values.push(destination, batch, from + j, r.kind, r.key, r.schema, r.table, r.name, r.type);
          const b = j * 9;
          return `($${b + 1}, $${b + 2}, $${b + 3}, $${b + 4}, $${b + 5}, $${b + 6}, $${b + 7}, $${b + 8}, $${b + 9}, now())`;
        });
        await c.query(`INSERT INTO _tributary.warehouse_names VALUES ${tuples.join(', ')}`, values);
      }
      await c.query(
        `INSERT INTO _tributary.warehouse_offsets (destination, workspace, log_id, next_offset, updated_at)
         VALUES ($1, $2, $3, $4, now())
         ON CONFLICT (destination, workspace, log_id)
         DO UPDATE SET next_offset = EXCLUDED.next_offset, updated_at = now()`,
        [
          options.offsetKey ?? destination,
          options.scope?.workspace ?? '',
          options.scope?.logId ?? '',
          nextOffset,
        ],
      );
      if (options.commit === false) {
        await c.query('ROLLBACK');
        return { namesSeen: options.namesSeen ?? -1 };
      }
      await c.query('COMMIT');
      return { namesSeen: names.length > 0 ? batch : seen };
    } catch (err) {
      // A copy in flight may be what failed, and the statement behind it only saw the
      // aborted transaction (25P02): the copy's error is the one that says why.
      const settled = await Promise.allSettled(inFlight);
      await c.query('ROLLBACK').catch(() => undefined);
      const cause = settled.find((r) => r.status === 'rejected' && this.refusesData(r.reason));
      throw cause?.status === 'rejected' ? cause.reason : err;
    }
  }

  private ddl(ch: SchemaChange): string {
    const table = (schema: string, name: string) => `${pgIdent(schema)}.${pgIdent(name)}`;
    switch (ch.kind) {
      case 'create-schema':
        return `CREATE SCHEMA IF NOT EXISTS ${pgIdent(ch.schema)}`;
      case 'create-table': {
        const cols = ch.columns.map((col) => `${pgIdent(col.name)} ${TYPES[col.type]}`);
        if (ch.columns.some((col) => col.name === 'id')) cols.push('PRIMARY KEY (id)');
        return `CREATE TABLE IF NOT EXISTS ${table(ch.schema, ch.table)} (${cols.join(', ')})`;
      }
      case 'add-column':
        return `ALTER TABLE ${table(ch.schema, ch.table)} ADD COLUMN IF NOT EXISTS ${pgIdent(ch.column.name)} ${TYPES[ch.column.type]}`;
      case 'widen-column':
        return `ALTER TABLE ${table(ch.schema, ch.table)} ALTER COLUMN ${pgIdent(ch.column.name)} TYPE ${TYPES[ch.column.type]}`;
    }
  }

  /**
   * New rows are copied straight into the table after one primary-key lookup finds the ids
   * already stored; `users` rows go through a staging table and `INSERT … ON CONFLICT`.
   */
  /**
   * Sends the rows of one table and returns the copy in flight (wrapped: awaiting a promise
   * of a promise would wait for the copy). New rows are copied straight
   * into the table after one primary-key lookup finds the ids already stored; `users` rows go
   * through a staging table and `INSERT … ON CONFLICT`.
   */
  private async loadTable(c: pg.Client, t: TableLoad, stage: string): Promise<{ done: Promise<void> }> {
    const names = t.columns.map((col) => pgIdent(col.name));
    const target = `${pgIdent(t.schema)}.${pgIdent(t.table)}`;
    if (t.mode !== 'upsert') {
      const idAt = t.columns.findIndex((col) => col.name === 'id');
      let rows = t.rows;
      if (t.mode === 'insert' && idAt >= 0) {
        const found = await c.query<{ id: string }>(`SELECT id FROM ${target} WHERE id = ANY($1::text[])`, [
          rows.map((r) => r[idAt]),
        ]);
        if (found.rows.length > 0) {
          const stored = new Set(found.rows.map((r) => r.id));
          rows = rows.filter((r) => !stored.has(r[idAt]!));
        }
      }
      const loadedAt = new Date().toISOString();
      const copy = pipeline(
        Readable.from(csvChunks(rows, loadedAt)),
        c.query(copyFrom(`COPY ${target} (${[...names, 'loaded_at'].join(', ')}) FROM STDIN (FORMAT csv)`)),
      );
      copy.catch(() => undefined); // awaited by apply; this only keeps it from going unhandled
      return { done: copy };
    }
    await c.query(`CREATE TEMP TABLE ${stage} (${names.map((n) => `${n} text`).join(', ')}) ON COMMIT DROP`);
    await pipeline(
      Readable.from(csvChunks(t.rows)),
      c.query(copyFrom(`COPY ${stage} FROM STDIN (FORMAT csv)`)),
    );
    const casts = t.columns.map((col, i) => `CAST(s.${names[i]} AS ${TYPES[col.type]})`);
    const sets = names.filter((n) => n !== '"id"').map((n) => `${n} = coalesce(EXCLUDED.${n}, t.${n})`);
    await c.query(`INSERT INTO ${target} AS t (${[...names, 'loaded_at'].join(', ')})
      SELECT ${casts.join(', ')}, now() FROM ${stage} s
      ON CONFLICT (id) DO UPDATE SET ${[...sets, 'loaded_at = EXCLUDED.loaded_at'].join(', ')}`);
    return { done: Promise.resolve() };
  }

  /** On a connection of its own (the load's may be inside a transaction), closed after. */
  async selectById(schema: string, table: string, id: string): Promise<Record<string, unknown>[]> {
    const c = new pg.Client(this.clientConfig);
    c.on('error', () => undefined);
    await c.connect();
    try {
      const r = await c.query(`SELECT * FROM ${pgIdent(schema)}.${pgIdent(table)} WHERE id = $1 LIMIT 10`, [
        id,
      ]);
      return r.rows.map((row: Record<string, unknown>) =>
        Object.fromEntries(Object.entries(row).map(([k, v]) => [k, v instanceof Date ? v.toISOString() : v])),
      );
    } finally {
      await c.end().catch(() => undefined);
    }
  }

  /** Ends the connection; one the server does not answer is closed after `socketMs`. */
  async close(): Promise<void> {
    const c = this.client;
    this.client = undefined;
    const socket = (c as unknown as ClientInternals | undefined)?.connection?.stream;
    socket?.setTimeout(this.socketMs, () => socket.destroy());
    await c?.end().catch(() => undefined);
  }
}

/**
 * The names `destination` recorded after mark `after`, in the order given, and the new mark.
 * `batch_offset` numbers the loads that gave out names, in commit order.
 */
async function readNames(
  c: pg.Client,
  destination: string,
  after: number,
): Promise<{ names: NameRecord[]; namesSeen: number }> {
  const n = await c.query<{
    kind: NameRecord['kind'];
    key: string;
    schema_name: string;
    table_name: string | null;
    name: string;
    type: ColumnType | null;
    batch_offset: string;
  }>(
    `SELECT kind, key, schema_name, table_name, name, type, batch_offset FROM _tributary.warehouse_names
     WHERE destination = $1 AND batch_offset > $2 ORDER BY batch_offset, idx`,
    [destination, after],
  );
  return {
    names: n.rows.map((r) => ({
      kind: r.kind,
      key: r.key,
      schema: r.schema_name,
      table: r.table_name,
      name: r.name,
      type: r.type,
    })),
    namesSeen: n.rows.length > 0 ? Number(n.rows[n.rows.length - 1]!.batch_offset) : after,
  };
}

/**
 * Rows as CSV text in chunks of about 1 MB: null is an empty field, text is always quoted;
 * `last`, when given, is appended to every row as one more field.
 */
function* csvChunks(rows: readonly (string | null)[][], last?: string): Generator<string> {
  const tail = last === undefined ? '\n' : `,"${last}"\n`;
  let chunk = '';
  for (const row of rows) {
    for (let i = 0; i < row.length; i++) {
      const v = row[i];
      if (i > 0) chunk += ',';
      if (v !== null && v !== undefined) chunk += `"${v.replace(/"/g, '""')}"`;
    }
    chunk += tail;
    if (chunk.length >= 1 << 20) {
      yield chunk;
      chunk = '';
    }
  }
  if (chunk !== '') yield chunk;
}
