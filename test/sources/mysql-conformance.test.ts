import { randomBytes } from 'node:crypto';
import mysql from 'mysql2/promise';
import { CONFORMANCE_STREAM, sourceConformance, tableRows } from '../conformance/source-conformance.js';

/**
 * The MySQL / MariaDB connector against the source conformance suite: a scratch database on
 * the machine's MariaDB with a table `rows`, read incrementally by its AUTO_INCREMENT column.
 * `id` is nullable there: a row without it is the bad record a database can hand over.
 */
const SERVER = { host: '127.0.0.1', port: 3306, user: 'root', password: '' };

async function unreachable(): Promise<string | undefined> {
  try {
    const c = await mysql.createConnection({ ...SERVER, connectTimeout: 2000 });
    await c.end();
    return undefined;
  } catch (err) {
    return (err as Error).message;
  }
}
const problem = await unreachable();

const source = (o: { host?: string; port?: number; user?: string; database: string }) => `  - id: shop
    type: mysql
    host: ${o.host ?? SERVER.host}
    port: ${o.port ?? SERVER.port}
    user: ${o.user ?? SERVER.user}
    database: ${o.database}
    streams:
      - name: rows
        table: ${o.database}.rows
        syncMode: incremental
        cursorField: seq
        ${CONFORMANCE_STREAM}`;

sourceConformance('mysql (MariaDB)', async () => {
  if (problem) return undefined;
  const database = `srcconf_${randomBytes(6).toString('hex')}`;
  const admin = await mysql.createConnection(SERVER);
  await admin.query(`CREATE DATABASE ${database}`);
  await admin.query(
    `CREATE TABLE ${database}.rows (seq BIGINT AUTO_INCREMENT PRIMARY KEY, id INT NULL, email TEXT, name TEXT)`,
  );
  return {
    sourceId: 'shop',
    sourceYaml: source({ database }),
    // The row at the saved cursor value is read again (the bound is inclusive).
    rereads: 1,
    ...tableRows((chunk) =>
      admin.query(`INSERT INTO ${database}.rows (id, email, name) VALUES ?`, [
        chunk.map((r) => [r.id, r.email, r.name]),
      ]),
    ),
    brokenSources: () => [
      { yaml: source({ database, port: 1 }), code: 'TRIB_ERR_SOURCE_UNREACHABLE' },
      { yaml: source({ database, user: 'no_such_user' }), code: 'TRIB_ERR_SOURCE_AUTH' },
      { yaml: source({ database: 'no_such_database' }), code: 'TRIB_ERR_SOURCE_DATABASE_NOT_FOUND' },
    ],
    async cleanup() {
      await admin.query(`DROP DATABASE IF EXISTS ${database}`);
      await admin.end();
    },
  };
});
