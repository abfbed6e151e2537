import type { UserView } from '../governance/governance.js';
import { type AdminOptions, adminRequest } from './admin-client.js';

export interface UsersAddOptions extends AdminOptions {
  role: string;
  sources?: string;
  json?: boolean;
}

/**
 * `tributary users add NAME --role ROLE [--sources web,label:eu]`: a user with a generated
 * password, printed once (the user logs in to the console with it).
 */
export async function usersAddCommand(name: string, opts: UsersAddOptions): Promise<void> {
  const sources = opts.sources
    ?.split(',')
    .map((s) => s.trim())
    .filter((s) => s !== '');
  const made = await adminRequest<{ user: UserView; password?: string }>(opts, 'POST', '/admin/v1/users', {
    name,
    role: opts.role,
    ...(sources && sources.length > 0 ? { sources } : {}),
  });
  if (opts.json) {
    process.stdout.write(`${JSON.stringify(made)}\n`);
    return;
  }
  const scope = made.user.sources ? ` limited to ${made.user.sources.join(', ')}` : '';
  process.stdout.write(`added ${made.user.name} (${made.user.role}${scope})\n`);
  if (made.password) process.stdout.write(`password ${made.password} (shown once)\n`);
}
