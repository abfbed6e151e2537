import type pg from 'pg';

/**
 * First key of every advisory lock Tributary takes ('TRIB' in ASCII). PostgreSQL's two-key
 * locks live in a key space of their own, so other users of one-key advisory locks on the
 * same database never wait on ours.
 */
export const TRIBUTARY_LOCK_CLASS = 0x54524942;

/**
 * Takes the transaction-scoped advisory lock named `purpose` (second key: `hashtext` of it),
 * waiting for the transaction holding it. Released at commit or rollback. Two purposes that
 * hash alike only wait on each other needlessly; they never skip a lock.
 */
export async function advisoryXactLock(client: pg.ClientBase, purpose: string): Promise<void> {
  await client.query('SELECT pg_advisory_xact_lock($1, hashtext($2))', [TRIBUTARY_LOCK_CLASS, purpose]);
}
