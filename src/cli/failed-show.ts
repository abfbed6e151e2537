import type { FailedDetail } from '../pipeline/failed-store.js';
import { type AdminOptions, adminRequest } from './admin-client.js';

/** `tributary failed show ID`: one failed event with its payload and the function's log lines. */
export async function failedShowCommand(id: string, opts: AdminOptions & { json?: boolean }): Promise<void> {
  const f = await adminRequest<FailedDetail>(opts, 'GET', `/admin/v1/failed/${encodeURIComponent(id)}`);
  if (opts.json) {
    process.stdout.write(`${JSON.stringify(f)}\n`);
    return;
  }
  const lines = [
    `id          ${f.id}`,
    `source      ${f.source_id}`,
    `message id  ${f.message_id ?? ''}`,
    `stage       ${f.stage}`,
    `code        ${f.code}`,
    `reason      ${f.reason}`,
    `received at ${f.received_at}`,
    `failed at   ${f.failed_at}`,
    `state       ${f.retry_state}${f.retried_at ? ` (${f.retried_at})` : ''}`,
    ...(f.retry_of ? [`retry of    ${f.retry_of}`] : []),
    ...(f.logs?.length ? ['log lines', ...f.logs.map((l) => `  ${l}`)] : []),
    'payload',
    JSON.stringify(f.payload, null, 2),
  ];
  process.stdout.write(`${lines.join('\n')}\n`);
}
