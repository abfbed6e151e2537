import type { TokenView } from '../governance/governance.js';
import { type AdminOptions, adminRequest } from './admin-client.js';

export interface TokensCreateOptions extends AdminOptions {
  role?: string;
  sources?: string;
  scopes?: string;
  user?: string;
  service?: boolean;
  expires?: string;
  json?: boolean;
}

const list = (text: string | undefined) =>
  text
    ?.split(',')
    .map((s) => s.trim())
    .filter((s) => s !== '');

/**
 * `tributary tokens create NAME [--role R] [--sources a,label:eu] [--scopes p1,p2] [--user U |
 * --service] [--expires DAYS]`: an API token, printed once.
 */
export async function tokensCreateCommand(name: string, opts: TokensCreateOptions): Promise<void> {
  const made = await adminRequest<TokenView & { token: string }>(opts, 'POST', '/admin/v1/tokens', {
    name,
    ...(opts.role ? { role: opts.role } : {}),
    ...(opts.sources ? { sources: list(opts.sources) } : {}),
    ...(opts.scopes ? { scopes: list(opts.scopes) } : {}),
    ...(opts.user ? { user: opts.user } : {}),
    ...(opts.service ? { service: true } : {}),
    ...(opts.expires ? { expiresInDays: Number(opts.expires) } : {}),
  });
  if (opts.json) {
    process.stdout.write(`${JSON.stringify(made)}\n`);
    return;
  }
  process.stdout.write(
    `${made.token}\n(shown once; id ${made.id}, role ${made.role}${made.user ? ` of ${made.user}` : ', service'})\n`,
  );
}
