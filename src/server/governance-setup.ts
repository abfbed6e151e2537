import type { Logger } from 'pino';
import type { TributaryConfig } from '../config/schema.js';
import { Governance } from '../governance/governance.js';
import type { GovernanceStore } from '../store/governance-store.js';

export interface GovernanceSetup {
  governance: Governance;
  /** The owner made because there was no user, with its password (to print once), if this process made it. */
  firstOwner: { name: string; password: string } | undefined;
  /** Stops the periodic purge (the store is closed by its owner). */
  stop(): void;
}

/**
 * Users, sessions, tokens and the audit trail over the deployment's store: the first owner
 * when there is no user, and the hourly purge of audit entries past `governance.auditRetention`.
 */
export async function setUpGovernance(
  store: GovernanceStore,
  config: TributaryConfig,
  logger: Logger,
): Promise<GovernanceSetup> {
  const g = config.governance;
  const labels = new Map(config.sources.map((s) => [s.id, s.labels ?? []]));
  const governance = new Governance(store, {
    auditRetentionMs: g.auditRetention,
    sessionTtlMs: g.sessionTtl,
    secureCookie: g.secureCookie,
    maxFailures: g.login.maxFailures,
    lockoutMs: g.login.lockout,
    sourceLabels: (id) => labels.get(id) ?? [],
  });
  const firstOwner = await governance.bootstrapOwner();
  const stop = governance.startPurging((err) =>
    logger.warn({ err }, 'audit retention purge failed; retried in an hour'),
  );
  return { governance, firstOwner, stop };
}
