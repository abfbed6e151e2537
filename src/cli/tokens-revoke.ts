import { type AdminOptions, adminRequest } from './admin-client.js';

/** `tributary tokens revoke ID`: the token stops working at once. */
export async function tokensRevokeCommand(
  id: string,
  opts: AdminOptions & { json?: boolean },
): Promise<void> {
  const r = await adminRequest<{ revoked: string }>(
    opts,
    'DELETE',
    `/admin/v1/tokens/${encodeURIComponent(id)}`,
  );
  process.stdout.write(opts.json ? `${JSON.stringify(r)}\n` : `revoked ${r.revoked}\n`);
}
