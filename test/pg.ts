import { randomBytes } from 'node:crypto';
import pg from 'pg';

/** PostgreSQL of the development machine (trust auth); tests create a database of their own in it. */
export const PG_ADMIN: pg.ClientConfig = {
  host: '127.0.0.1',
  port: 5432,
  user: 'postgres',
  database: 'test',
};

/** Why PostgreSQL cannot be used, or undefined when it answers. */
export async function pgUnreachable(): Promise<string | undefined> {
  const c = new pg.Client({ ...PG_ADMIN, connectionTimeoutMillis: 2000 });
  try {
    await c.connect();
    await c.end();
    return undefined;
  } catch (err) {
    return (err as Error).message;
  }
}

/** A database of a test's own in the machine's PostgreSQL, made by {@link scratchDatabase}. */
export interface ScratchDatabase {
  /** Its name: the prefix given, `_` and 12 random hex digits. */
  readonly name: string;
  /** {@link PG_ADMIN} pointed at it. */
  readonly config: pg.ClientConfig;
  /** Its connection string, `postgres://postgres@127.0.0.1:5432/<name>`. */
  readonly url: string;
  /** The connection that created it, to the maintenance database `test`; open until `drop()`. */
  readonly admin: pg.Client;
  /**
   * Drops it `WITH (FORCE)`, after waiting up to a second for connections to it to close, then
   * ends `admin`.
   * Needs no `this`: it may be passed on as it is, e.g. `cleanups.push(db.drop)` or `afterAll(db.drop)`.
   */
  readonly drop: () => Promise<void>;
}

/**
 * Creates a database named `<prefix>_<random hex>` in the machine's PostgreSQL and returns it
 * with the admin connection that created it. The caller registers `drop()` in its own cleanup.
 */
export async function scratchDatabase(prefix: string): Promise<ScratchDatabase> {
  const name = `${prefix}_${randomBytes(6).toString('hex')}`;
  const admin = new pg.Client(PG_ADMIN);
  await admin.connect();
  try {
    await admin.query(`CREATE DATABASE ${name}`);
  } catch (err) {
    await admin.end();
    throw err;
  }
  return {
    name,
    config: { ...PG_ADMIN, database: name },
    url: `postgres://${PG_ADMIN.user}@${PG_ADMIN.host}:${PG_ADMIN.port}/${name}`,
    admin,
    async drop() {
      try {
        // A pool's end() resolves before its connections have closed: give them a moment, for
        // FORCE would end them with an error their client may not handle (an uncaught error).
        for (let waited = 0; waited < 1_000; waited += 20) {
          const open = await admin.query<{ n: number }>(
            'SELECT count(*)::int AS n FROM pg_stat_activity WHERE datname = $1',
            [name],
          );
          if (open.rows[0]!.n === 0) break;
          await new Promise((r) => setTimeout(r, 20));
        }
        await admin.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`);
      } finally {
        await admin.end();
      }
    },
  };
}
