import type { TokenView } from '../governance/governance.js';
import { type AdminOptions, adminRequest } from './admin-client.js';

/** `tributary tokens list`: one's own tokens (an owner sees all), never their values. */
export async function tokensListCommand(opts: AdminOptions & { json?: boolean }): Promise<void> {
  const { tokens } = await adminRequest<{ tokens: TokenView[] }>(opts, 'GET', '/admin/v1/tokens');
  if (opts.json) process.stdout.write(`${JSON.stringify(tokens)}\n`);
  else if (tokens.length === 0) process.stdout.write('(no tokens)\n');
  else
    console.table(
      tokens.map((t) => ({
        id: t.id,
        name: t.name,
        prefix: `${t.prefix}…`,
        user: t.user ?? '(service)',
        role: t.role,
        sources: t.sources?.join(', ') ?? '(all)',
        scopes: t.scopes?.join(', ') ?? '(role)',
        last_used: t.lastUsedAt ?? '',
        state: t.revokedAt
          ? 'revoked'
          : t.expiresAt && Date.parse(t.expiresAt) <= Date.now()
            ? 'expired'
            : 'active',
      })),
    );
}
