import { createReadStream, statSync } from 'node:fs';
import { basename, dirname, resolve } from 'node:path';
import { Readable } from 'node:stream';
import cliProgress from 'cli-progress';
import { isScaleOut } from '../config/schema.js';
import { TributaryError } from '../errors.js';
import { openEmbeddedSources } from '../server/embedded-sources.js';
import { contentHash, mappedEvent } from '../sources/records.js';
import type { LiveProgress, SyncSummary } from '../sources/runner.js';
import { type LegacyImportOptions, legacyMapping } from '../sources/source-service.js';
import type { SyncRun } from '../store/source-store.js';
import { resolveServer, serverRequest } from './admin-client.js';
import { readServerFile, resolveWorkspace } from './workspace.js';

export interface ImportOptions {
  source: string;
  stream?: string;
  /** The former `import csv` options, for an http source: one identify per row. */
  idColumn?: string;
  userIdColumn?: string;
  timestampColumn?: string;
  map?: string[];
  url?: string;
  config?: string;
  dataDir?: string;
  json?: boolean;
  /** false: no progress bar even on a terminal. */
  progress?: boolean;
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
 * The identify event a CSV row of the former `import csv` becomes (anonymousId `<source>:<key>`,
 * mapped columns as traits), as `tributary import` now builds it through the stream mapping.
 * @throws Error when the key column is empty or the row makes no valid event.
 */
export function rowToIdentify(
  row: Record<string, string>,
  source: string,
  opts: { idColumn: string; userIdColumn?: string; timestampColumn?: string },
  mappings: readonly { trait: string; column: string }[],
): Record<string, unknown> {
  const key = row[opts.idColumn]?.trim();
  if (!key) throw new Error(`column ${opts.idColumn} is empty`);
  const mapping = legacyMapping(source, {
    ...opts,
    traits: Object.fromEntries(mappings.map((m) => [m.trait, m.column])),
  });
  const r = mappedEvent(row, mapping, 0, {
    sourceId: source,
    stream: 'import',
    key: JSON.stringify([key]),
    contentHash: contentHash(row),
    receivedAt: Date.now(),
  });
  if (!r.ok) throw new Error(r.reason);
  return JSON.parse(r.event.json) as Record<string, unknown>;
}

function legacyOptions(opts: ImportOptions): LegacyImportOptions | undefined {
  if (!opts.idColumn) return undefined;
  return {
    idColumn: opts.idColumn,
    userIdColumn: opts.userIdColumn,
    timestampColumn: opts.timestampColumn,
    traits: Object.fromEntries(parseMappings(opts.map ?? []).map((m) => [m.trait, m.column])),
  };
}

/** Rows, bytes, rate and ETA on a terminal; a line per checkpoint elsewhere (logs, CI). */
class Progress {
  private bar: cliProgress.SingleBar | undefined;
  private lastLine = 0;
  private readonly started = Date.now();

  constructor(
    private readonly total: number,
    tty: boolean,
  ) {
    if (!tty) return;
    this.bar = new cliProgress.SingleBar(
      {
        format: '{bar} {percentage}% | {rows} rows | {mb}/{totalMb} MB | {rate} rows/s | ETA {eta_formatted}',
        hideCursor: true,
        etaBuffer: 50,
      },
      cliProgress.Presets.shades_classic,
    );
    this.bar.start(Math.max(total, 1), 0, { rows: 0, mb: '0', totalMb: mb(total), rate: 0 });
  }

  update(p: Pick<LiveProgress, 'rows' | 'bytes' | 'objects' | 'events' | 'failed'>): void {
    const seconds = Math.max((Date.now() - this.started) / 1000, 0.001);
    if (this.bar) {
      this.bar.update(Math.min(p.bytes ?? 0, this.total), {
        rows: p.rows,
        mb: mb(p.bytes ?? 0),
        totalMb: mb(this.total),
        rate: Math.round(p.rows / seconds),
      });
    } else if (p.rows !== this.lastLine) {
      this.lastLine = p.rows;
      process.stderr.write(
        `progress rows=${p.rows} objects=${p.objects} events=${p.events} failed=${p.failed} bytes=${p.bytes ?? 0}\n`,
      );
    }
  }

  stop(): void {
    this.bar?.stop();
  }
}

function mb(bytes: number): string {
  return (bytes / 1024 / 1024).toFixed(1);
}

/**
 * `tributary import FILE --source ID [--stream NAME]`: reads the file into the source's
 * stream. With a server running for the workspace (or --url), the file is uploaded to it;
 * without, the workspace's files are opened here (the server loads the events when it starts).
 */
export async function importCommand(
  first: string,
  second: string | undefined,
  opts: ImportOptions,
): Promise<void> {
  // `import csv FILE` is the former form of `import FILE`.
  const file = resolve(first === 'csv' && second !== undefined ? second : first);
  const ws = resolveWorkspace({ config: opts.config, dataDir: opts.dataDir }, process.env);
  const config = ws.loaded.config;
  const source = config.sources.find((s) => s.id === opts.source);
  if (!source) throw new TributaryError('TRIB_ERR_SOURCE_NOT_FOUND', [opts.source]);
  const legacy = legacyOptions(opts);
  if (source.type === 'http' && !legacy)
    throw new Error(
      `source "${source.id}" is an http source: pass --id-column (and --map trait=Column) to import identify events into it, or configure a file source with streams (README, "Sources")`,
    );
  let size: number;
  try {
    size = statSync(file).size;
  } catch {
    throw new TributaryError('TRIB_ERR_SOURCE_PATH_NOT_FOUND', [file]);
  }
  const progress = new Progress(size, opts.progress !== false && !opts.json && process.stderr.isTTY === true);
  const started = Date.now();
  let summary: SyncSummary;
  try {
    const running = opts.url ?? (process.env.TRIBUTARY_URL || undefined) ?? readServerFile(ws.dataDir);
    if (running) summary = await uploadImport(file, opts, legacy, progress);
    else {
      if (isScaleOut(config))
        throw new Error('a scale-out workspace imports through its server: start it, or pass --url');
      const local = await openEmbeddedSources(config, ws.dataDir, dirname(ws.loaded.path));
      try {
        summary = await local.sources.importFile({
          sourceId: source.id,
          file,
          stream: opts.stream,
          trigger: 'cli',
          legacy,
          onProgress: (p) => progress.update(p),
        });
      } finally {
        await local.close();
      }
    }
  } finally {
    progress.stop();
  }
  const seconds = (Date.now() - started) / 1000;
  const out = { file, source: source.id, ...summary, seconds };
  process.stdout.write(
    opts.json
      ? `${JSON.stringify(out)}\n`
      : `${summary.status === 'succeeded' ? 'imported' : 'import failed:'} ${summary.rows} rows of ${file} into source ${source.id} in ${seconds.toFixed(1)} s: ${summary.objects} objects, ${summary.events} events, ${summary.failed} failed (see tributary failed list --source ${source.id} --stage source)${summary.error ? `\n${summary.error}` : ''}\n`,
  );
  if (summary.status !== 'succeeded') process.exitCode = 1;
}

/** Streams the file to the server's import route, then follows the run until it ends. */
async function uploadImport(
  file: string,
  opts: ImportOptions,
  legacy: LegacyImportOptions | undefined,
  progress: Progress,
): Promise<SyncSummary> {
  const { url, token } = resolveServer(opts, process.env);
  const q = new URLSearchParams({ name: basename(file) });
  if (opts.stream) q.set('stream', opts.stream);
  if (legacy) {
    q.set('idColumn', legacy.idColumn);
    if (legacy.userIdColumn) q.set('userIdColumn', legacy.userIdColumn);
    if (legacy.timestampColumn) q.set('timestampColumn', legacy.timestampColumn);
    for (const [t, c] of Object.entries(legacy.traits)) q.append('map', `${t}=${c}`);
  }
  const auth = token ? `Bearer ${token}` : undefined;
  let res: Response;
  try {
    res = await fetch(`${url}/admin/v1/sources/${encodeURIComponent(opts.source)}/import?${q}`, {
      method: 'POST',
      headers: { 'content-type': 'application/octet-stream', ...(auth ? { authorization: auth } : {}) },
      body: Readable.toWeb(createReadStream(file)) as ReadableStream,
      duplex: 'half',
    } as RequestInit);
  } catch (err) {
    throw new Error(
      `cannot reach the Tributary server at ${url} (${(err as Error).cause ?? (err as Error).message})`,
    );
  }
  const answer = (await res.json()) as { runId?: string; code?: string; message?: string };
  if (!res.ok || !answer.runId)
    throw new Error(`${answer.code ?? res.status}: ${answer.message ?? res.statusText}`);
  for (;;) {
    const { runs } = await serverRequest<{ runs: SyncRun[] }>(
      url,
      'GET',
      `/admin/v1/sources/${encodeURIComponent(opts.source)}/runs?limit=50`,
      undefined,
      auth,
    );
    const run = runs.find((r) => r.id === answer.runId);
    if (run) progress.update(run);
    if (run && run.status !== 'running')
      return {
        runId: run.id,
        sourceId: run.sourceId,
        status: run.status,
        rows: run.rows,
        objects: run.objects,
        events: run.events,
        failed: run.failed,
        attempts: 1,
        ...(run.error ? { error: run.error } : {}),
      };
    await new Promise((r) => setTimeout(r, 250));
  }
}
