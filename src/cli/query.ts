import { type AdminOptions, adminQuery } from './admin-client.js';

export interface QueryOptions extends AdminOptions {
  json?: boolean;
}

export async function queryCommand(sql: string, opts: QueryOptions): Promise<void> {
  const { rows, truncated } = await adminQuery(opts, sql);
  if (opts.json) process.stdout.write(`${JSON.stringify(rows)}\n`);
  else if (rows.length === 0) process.stdout.write('(no rows)\n');
  else console.table(rows);
  if (truncated)
    process.stderr.write(
      `(the first ${rows.length} rows only: the server's query.maxRows or query.maxBytes cut the rest)\n`,
    );
}
