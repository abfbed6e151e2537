import { z } from 'zod';
import { Duration } from './duration.js';

/** `governance:` users, console sessions and the audit trail (docs/configuration.md). */
export const GovernanceConfig = z
  .object({
    auditRetention: Duration.prefault('90d').describe(
      'How long audit_log entries are kept; older ones are purged hourly (default 90d).',
    ),
    sessionTtl: Duration.prefault('12h').describe(
      'How long a console session lasts after log-in (default 12h).',
    ),
    secureCookie: z
      .enum(['auto', 'always', 'never'])
      .default('auto')
      .describe(
        'The session cookie\'s Secure flag: "auto" sets it when the request came over HTTPS (X-Forwarded-Proto from a trusted proxy counts), "always", or "never" (plain HTTP on localhost).',
      ),
    login: z
      .object({
        maxFailures: z
          .number()
          .int()
          .min(1)
          .default(5)
          .describe('Failed log-ins of one user name, within lockout, after which the name is locked.'),
        lockout: Duration.prefault('15m').describe('How long a user name stays locked (default 15m).'),
      })
      .strict()
      .prefault({}),
  })
  .strict();
export type GovernanceConfig = z.output<typeof GovernanceConfig>;
