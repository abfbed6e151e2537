import pg from 'pg';
import { CONFORMANCE_STREAM, sourceConformance, tableRows } from '../conformance/source-conformance.js';
import { pgUnreachable, scratchDatabase } from '../pg.js';

/**
 * The PostgreSQL connector against the source conformance suite: a scratch database with a
 * table `rows`, read incrementally by its serial column. `id` is nullable there, so a row
 * without it is the bad record a database can hand over (its columns are typed: a value of
 * the wrong type cannot be stored in the first place).
 */
const problem = await pgUnreachable();

const source = (url: string) => `  - id: crm
    type: postgres
    connectionString: ${url}
    streams:
      - name: rows
        table: public.rows
        syncMode: incremental
        cursorField: seq
        ${CONFORMANCE_STREAM}`;

sourceConformance('postgres', async () => {
  if (problem) return undefined;
  const db = await scratchDatabase('srcconf');
  const client = new pg.Client(db.config);
  await client.connect();
  await client.query('CREATE TABLE rows (seq bigserial PRIMARY KEY, id integer, email text, name text)');
  const url = (u: URL) => u.toString();
  return {
    sourceId: 'crm',
    sourceYaml: source(db.url),
    // The row at the saved cursor value is read again (the bound is inclusive).
    rereads: 1,
    ...tableRows((chunk) =>
      client.query(
        'INSERT INTO rows (id, email, name) SELECT * FROM unnest($1::int[], $2::text[], $3::text[])',
        [chunk.map((r) => r.id), chunk.map((r) => r.email), chunk.map((r) => r.name)],
      ),
    ),
    brokenSources() {
      const port = new URL(db.url);
      port.port = '1';
      const user = new URL(db.url);
      user.username = 'no_such_user';
      const database = new URL(db.url);
      database.pathname = '/no_such_database';
      return [
        { yaml: source(url(port)), code: 'TRIB_ERR_SOURCE_UNREACHABLE' },
        { yaml: source(url(user)), code: 'TRIB_ERR_SOURCE_AUTH' },
        { yaml: source(url(database)), code: 'TRIB_ERR_SOURCE_DATABASE_NOT_FOUND' },
      ];
    },
    async cleanup() {
      await client.end();
      await db.drop();
    },
  };
});
