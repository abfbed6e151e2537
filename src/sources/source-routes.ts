/**
 * Admin routes of the pull sources (registered behind the admin token): check, discover,
 * sync, runs, and file uploads streamed to disk (never held in memory).
 */
import { createHash, randomUUID } from 'node:crypto';
import { createWriteStream, mkdirSync, renameSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import type { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import type { FastifyInstance } from 'fastify';
import { TributaryError } from '../errors.js';
import type { SyncSummary } from './runner.js';
import type { LegacyImportOptions, SourceService } from './source-service.js';

export interface SourceRoutesDeps {
  sources: SourceService;
  /** Folder uploads are kept in (`<dataDir>/uploads`): a file's content names it, so an upload sent again is the same file. */
  uploadDir: string;
  onError?: (sourceId: string, err: unknown) => void;
}

type Params = { Params: { id: string }; Querystring: Record<string, string | undefined> };
type UploadParams = { Params: { id: string }; Querystring: Record<string, string | string[] | undefined> };

/** Waits for the run (`?wait=true`) or answers 202 with its id once it is recorded. */
async function started(
  run: (onStart: (runId: string) => void) => Promise<SyncSummary>,
  wait: boolean,
  onError: (err: unknown) => void,
): Promise<{ status: number; body: unknown }> {
  let onStart!: (runId: string) => void;
  const id = new Promise<string>((r) => (onStart = r));
  const done = run(onStart);
  if (wait) return { status: 200, body: await done };
  done.catch(onError);
  const runId = await Promise.race([id, done.then((s) => s.runId)]);
  return { status: 202, body: { runId } };
}

export function sourceAdminRoutes(admin: FastifyInstance, deps: SourceRoutesDeps): void {
  const { sources } = deps;
  const onError = (id: string) => (err: unknown) => deps.onError?.(id, err);

  admin.post<Params>('/admin/v1/sources/:id/check', async (req) => sources.check(req.params.id));
  admin.get<Params>('/admin/v1/sources/:id/discover', async (req) => sources.discover(req.params.id));
  admin.post<Params>('/admin/v1/sources/:id/discover', async (req) => sources.discover(req.params.id));
  admin.post<Params>('/admin/v1/sources/:id/sync', async (req, reply) => {
    sources.pull(req.params.id);
    const streams = req.query.stream ? req.query.stream.split(',') : undefined;
    const r = await started(
      (onStart) => sources.sync(req.params.id, { trigger: 'api', streams, onStart }),
      req.query.wait === 'true',
      onError(req.params.id),
    );
    return reply.status(r.status).send(r.body);
  });
  // Any source has runs: an http source's too, from imports of the former `import csv` form.
  admin.get<Params>('/admin/v1/sources/:id/runs', async (req) => {
    sources.known(req.params.id);
    const limit = Math.min(Math.max(Number(req.query.limit ?? 20) || 20, 1), 1000);
    return {
      runs: await sources.runner.runs(req.params.id, limit),
      live: sources.runner.live(req.params.id) ?? null,
    };
  });

  // Uploads: the body is streamed to a file, so a body parser of their own (the API's buffers).
  void admin.register(async (up) => {
    up.removeAllContentTypeParsers();
    up.addContentTypeParser('*', (_req, payload, done) => done(null, payload));
    up.post<UploadParams>(
      '/admin/v1/sources/:id/import',
      { bodyLimit: Number.MAX_SAFE_INTEGER },
      async (req, reply) => {
        const id = req.params.id;
        const q = (k: string) => {
          const v = req.query[k];
          return Array.isArray(v) ? v[0] : v;
        };
        const legacy = legacyFromQuery(req.query);
        if (!legacy) sources.pull(id);
        const name = safeName(q('name') ?? 'upload.csv');
        mkdirSync(deps.uploadDir, { recursive: true });
        const tmp = join(deps.uploadDir, `.${randomUUID()}.part`);
        const hash = createHash('sha256');
        const body = (req.body ?? req.raw) as Readable;
        try {
          await pipeline(
            body,
            async function* (chunks: AsyncIterable<Buffer>) {
              for await (const c of chunks) {
                hash.update(c);
                yield c;
              }
            },
            createWriteStream(tmp),
          );
        } catch (err) {
          rmSync(tmp, { force: true });
          throw new TributaryError('TRIB_ERR_SOURCE_FILE_UNREADABLE', [
            name,
            `the upload did not arrive whole: ${(err as Error).message}`,
          ]);
        }
        // Named by content: the same file uploaded again has the same path, so its state says it is done.
        const file = join(deps.uploadDir, `${hash.digest('hex').slice(0, 32)}-${name}`);
        renameSync(tmp, file);
        const r = await started(
          (onStart) =>
            sources.importFile({
              sourceId: id,
              file,
              stream: q('stream'),
              trigger: 'upload',
              legacy,
              onStart,
            }),
          q('wait') === 'true',
          onError(id),
        );
        return reply.status(r.status).send({ ...(r.body as object), file });
      },
    );
  });
}

/** The former `import csv` options (`idColumn`, `map=trait=Column`…), for an http source. */
function legacyFromQuery(
  query: Record<string, string | string[] | undefined>,
): LegacyImportOptions | undefined {
  const one = (k: string) => (Array.isArray(query[k]) ? query[k][0] : query[k]);
  const idColumn = one('idColumn');
  if (!idColumn) return undefined;
  const maps = query.map === undefined ? [] : Array.isArray(query.map) ? query.map : [query.map];
  const traits: Record<string, string> = {};
  for (const m of maps) {
    const i = m.indexOf('=');
    if (i > 0) traits[m.slice(0, i)] = m.slice(i + 1);
  }
  return { idColumn, userIdColumn: one('userIdColumn'), timestampColumn: one('timestampColumn'), traits };
}

/** A file name for the upload folder: its last path part, letters, digits, dot, dash and underscore only. */
function safeName(name: string): string {
  const base = name.split(/[\\/]/).pop() ?? 'upload';
  const clean = base.replace(/[^A-Za-z0-9._-]/g, '_').replace(/^\.+/, '');
  return (clean || 'upload').slice(-100);
}
