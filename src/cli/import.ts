import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { parse } from 'csv-parse';
import { resolveServer, serverRequest } from './admin-client.js';
import { resolveWorkspace } from './workspace.js';

export interface ImportCsvOptions {
  source: string;
  idColumn: string;
  userIdColumn?: string;
  timestampColumn?: string;
  map?: string[];
  url?: string;
  config?: string;
  dataDir?: string;
  batch?: string;
  json?: boolean;
}

/** `--map email=Email` → trait `email` from column `Email`. */
export function parseMappings(maps: readonly string[]): { trait: string; column: string }[] {
  return maps.map((m) => {
    const i = m.indexOf('=');
    if (i <= 0 || i === m.length - 1) throw new Error(`--map expects trait=Column, got "${m}"`);
    return { trait: m.slice(0, i).trim(), column: m.slice(i + 1).trim() };
  });
}

/**
 * One identify event per CSV row: the record key becomes the anonymous id `<source>:<key>`
 * (or `--user-id-column` the userId), mapped columns become traits (email and phone are
 * identifiers too). The messageId hashes the source, key and row, so importing the same file
 * again is deduplicated by the server while a changed row is a new event.
 */
export function rowToIdentify(
  row: Record<string, string>,
  source: string,
  opts: { idColumn: string; userIdColumn?: string; timestampColumn?: string },
  mappings: readonly { trait: string; column: string }[],
): Record<string, unknown> {
  const key = row[opts.idColumn]?.trim();
  if (!key) throw new Error(`column ${opts.idColumn} is empty`);
  const traits: Record<string, string> = {};
  for (const m of mappings) {
    const v = row[m.column];
    if (v !== undefined && v.trim() !== '') traits[m.trait] = v.trim();
  }
  const event: Record<string, unknown> = {
    type: 'identify',
    messageId: `import-${createHash('sha256')
      .update(JSON.stringify([source, key, row]))
      .digest('hex')
      .slice(0, 40)}`,
    anonymousId: `${source}:${key}`,
    traits,
    context: { library: { name: 'tributary-import-csv' } },
  };
  const userId = opts.userIdColumn ? row[opts.userIdColumn]?.trim() : undefined;
  if (userId) event.userId = userId;
  const ts = opts.timestampColumn ? row[opts.timestampColumn]?.trim() : undefined;
  if (ts) event.timestamp = ts;
  return event;
}

export async function importCsvCommand(file: string, opts: ImportCsvOptions): Promise<void> {
  const ws = resolveWorkspace({ config: opts.config, dataDir: opts.dataDir }, process.env);
  const source = ws.loaded.config.sources.find((s) => s.id === opts.source);
  if (!source) throw new Error(`no source "${opts.source}" in ${ws.loaded.path}: add it (type http) first`);
  if (source.type !== 'http')
    throw new Error(`source "${opts.source}" is a ${source.type} source: import into a source of type http`);
  const { url } = resolveServer(opts, process.env);
  const mappings = parseMappings(opts.map ?? []);
  const batchSize = Math.min(Math.max(Number(opts.batch ?? 500) || 500, 1), 2_500);
  const auth = `Basic ${Buffer.from(`${source.writeKey}:`).toString('base64')}`;
  let sent = 0;
  let skipped = 0;
  let rejected = 0;
  let line = 1;
  let batch: Record<string, unknown>[] = [];
  const flush = async () => {
    if (batch.length === 0) return;
    let body: { rejected?: unknown[] };
    try {
      body = await serverRequest(url, 'POST', '/v1/batch', { batch }, auth);
    } catch (err) {
      throw new Error(`${(err as Error).message} (after ${sent} rows)`);
    }
    rejected += body.rejected?.length ?? 0;
    sent += batch.length;
    batch = [];
  };
  const parser = createReadStream(file).pipe(
    parse({ columns: true, skip_empty_lines: true, bom: true, trim: false }),
  );
  for await (const row of parser as AsyncIterable<Record<string, string>>) {
    line++;
    if (line === 2 && !(opts.idColumn in row)) {
      throw new Error(`${file} has no column "${opts.idColumn}" (columns: ${Object.keys(row).join(', ')})`);
    }
    try {
      batch.push(rowToIdentify(row, source.id, opts, mappings));
    } catch (err) {
      skipped++;
      process.stderr.write(`${file}:${line}: skipped: ${(err as Error).message}\n`);
      continue;
    }
    if (batch.length >= batchSize) await flush();
  }
  await flush();
  const summary = { file, source: source.id, sent, rejected, skipped };
  process.stdout.write(
    opts.json
      ? `${JSON.stringify(summary)}\n`
      : `imported ${sent} rows from ${file} into source ${source.id} (${rejected} rejected, ${skipped} skipped)\n`,
  );
}
