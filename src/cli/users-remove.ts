import type { UserView } from '../governance/governance.js';
import { type AdminOptions, adminRequest } from './admin-client.js';

/** `tributary users remove NAME`: the user, their sessions and tokens (the last owner stays). */
export async function usersRemoveCommand(
  name: string,
  opts: AdminOptions & { json?: boolean },
): Promise<void> {
  const { removed } = await adminRequest<{ removed: UserView }>(
    opts,
    'DELETE',
    `/admin/v1/users/${encodeURIComponent(name)}`,
  );
  if (opts.json) process.stdout.write(`${JSON.stringify(removed)}\n`);
  else
    process.stdout.write(
      `removed ${removed.name} (${removed.role}); their sessions ended and tokens revoked\n`,
    );
}
