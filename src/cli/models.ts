import type { ModelInfo } from '../destinations/reverse-etl/model-service.js';
import type { ModelRunSummary } from '../destinations/reverse-etl/model-sync.js';
import type { ModelRun } from '../store/model-store.js';
import { type AdminOptions, adminRequest } from './admin-client.js';

/** `tributary models …`: reverse-ETL models on the running server, through the admin API. */
export interface ModelsOptions extends AdminOptions {
  json?: boolean;
  limit?: string;
}

function print(value: unknown, json: boolean | undefined, text: string): void {
  process.stdout.write(json ? `${JSON.stringify(value)}\n` : `${text}\n`);
}

const path = (id: string, verb: string) => `/admin/v1/models/${encodeURIComponent(id)}/${verb}`;

export async function modelsListCommand(opts: ModelsOptions): Promise<void> {
  const { models } = await adminRequest<{ models: ModelInfo[] }>(opts, 'GET', '/admin/v1/models');
  if (opts.json) return print(models, true, '');
  if (models.length === 0)
    return print(models, false, '(no models: declare them under models: in the configuration)');
  console.table(
    models.map((m) => ({
      id: m.id,
      destination: m.destination,
      mode: m.syncMode,
      schedule: m.schedule ?? 'on demand',
      enabled: m.enabled,
      running: m.running,
      'last run': m.lastRun ? `${m.lastRun.status} ${m.lastRun.startedAt}` : 'never',
    })),
  );
}

export async function modelsRunCommand(id: string, opts: ModelsOptions): Promise<void> {
  const r = await adminRequest<ModelRunSummary>(opts, 'POST', `${path(id, 'run')}?trigger=cli`);
  print(
    r,
    opts.json,
    `run of ${id} ${r.status}: ${r.rows ?? 0} rows, ${r.added} added, ${r.changed} changed, ${r.removed} removed, ${r.failed} failed (${r.durationMs} ms)${r.error ? `\n${r.error}` : ''}`,
  );
  if (r.status !== 'succeeded' || r.failed > 0) process.exitCode = 1;
}

export async function modelsRunsCommand(id: string, opts: ModelsOptions): Promise<void> {
  const limit = Number(opts.limit ?? 20) || 20;
  const { runs } = await adminRequest<{ runs: ModelRun[] }>(
    opts,
    'GET',
    `${path(id, 'runs')}?limit=${limit}`,
  );
  if (opts.json) return print(runs, true, '');
  if (runs.length === 0) return print(runs, false, `(model ${id} has not run yet)`);
  console.table(
    runs.map((r) => ({
      started: r.startedAt,
      finished: r.finishedAt ?? '',
      trigger: r.trigger,
      status: r.status,
      added: r.added,
      changed: r.changed,
      removed: r.removed,
      failed: r.failed,
      error: r.error?.split('\n')[0]?.slice(0, 80) ?? '',
    })),
  );
}
