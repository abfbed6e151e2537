import { type AdminOptions, adminQuery } from './admin-client.js';

export interface QueryOptions extends AdminOptions {
  json?: boolean;
}

export async function queryCommand(sql: string, opts: QueryOptions): Promise<void> {
  const rows = await adminQuery(opts, sql);
  if (opts.json) process.stdout.write(`${JSON.stringify(rows)}\n`);
  else if (rows.length === 0) process.stdout.write('(no rows)\n');
  else console.table(rows);
}
