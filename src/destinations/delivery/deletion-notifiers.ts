import type { DestinationConfig } from '../../config/destinations-schema.js';
import { destinationKind, isStreamKind } from '../registry.js';
import type { IdentityRef, StreamContext } from '../stream.js';

/** How long one destination's deletion request may take before the step is retried. */
const NOTIFY_TIMEOUT_MS = 60_000;

/**
 * The streaming destinations that take deletion requests (`capabilities.deletion`), each as a
 * notifier of a privacy deletion: it opens the destination, asks it to delete the identities
 * (`StreamDestination.deleteIdentities`) and closes it. A refusal throws, so the deletion
 * request keeps the step pending and tries it again.
 */
export function deletionNotifiers(
  destinations: readonly DestinationConfig[],
  ctx: StreamContext,
): { name: string; notify: (identities: readonly IdentityRef[]) => Promise<void> }[] {
  const out: { name: string; notify: (identities: readonly IdentityRef[]) => Promise<void> }[] = [];
  for (const config of destinations) {
    const kind = destinationKind(config.type);
    if (!config.enabled || !isStreamKind(kind) || !kind.capabilities.deletion) continue;
    out.push({
      name: config.id,
      notify: async (identities) => {
        const destination = await (await kind.connector()).create(config, ctx);
        try {
          if (!destination.deleteIdentities) return;
          const r = await destination.deleteIdentities(identities, AbortSignal.timeout(NOTIFY_TIMEOUT_MS));
          if (r.status !== 'ok')
            throw new Error(`destination ${config.id} did not take the deletion request: ${r.error}`);
        } finally {
          await destination.close();
        }
      },
    });
  }
  return out;
}
