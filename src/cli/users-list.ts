import type { UserView } from '../governance/governance.js';
import { type AdminOptions, adminRequest } from './admin-client.js';

/** `tributary users list`: users, their roles and source limits. */
export async function usersListCommand(opts: AdminOptions & { json?: boolean }): Promise<void> {
  const { users } = await adminRequest<{ users: UserView[] }>(opts, 'GET', '/admin/v1/users');
  if (opts.json) process.stdout.write(`${JSON.stringify(users)}\n`);
  else if (users.length === 0) process.stdout.write('(no users)\n');
  else
    console.table(
      users.map((u) => ({
        name: u.name,
        role: u.role,
        sources: u.sources?.join(', ') ?? '(all)',
        created: u.createdAt,
        by: u.createdBy,
      })),
    );
}
