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
