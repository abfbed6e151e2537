import type { PushReceiver } from '../source.js';
import type { WebhookSourceConfig } from './spec.js';
import { compileWebhookFunction, webhookConnector } from './webhook-connector.js';

export { isStripeEventBody, webhookVendorByHeaders } from './detect.js';
export { WebhookSourceConfig } from './spec.js';
export { webhookConnector } from './webhook-connector.js';
export { closeWebhooks, webhookRoutes } from './webhook-routes.js';

/** What `tributary config check` checks of webhook sources: their function files compile. */
export function checkWebhooks(sources: readonly { type: string }[], baseDir: string): void {
  for (const s of sources) {
    if (s.type === 'webhook' && (s as WebhookSourceConfig).function)
      compileWebhookFunction(s as WebhookSourceConfig, baseDir);
  }
}

/**
 * Opens the enabled webhook sources among `sources` (their verifiers, compiled rules and
 * function sandboxes), by id. @throws `TRIB_ERR_TRANSFORM_INVALID` when a function does not load.
 */
export async function openWebhooks(
  sources: readonly { type: string; enabled: boolean }[],
  ctx: { baseDir: string; env: Record<string, string | undefined> },
): Promise<Map<string, PushReceiver>> {
  const out = new Map<string, PushReceiver>();
  try {
    for (const s of sources) {
      if (s.type !== 'webhook' || !s.enabled) continue;
      const config = s as WebhookSourceConfig;
      out.set(config.id, await webhookConnector.open(config, ctx));
    }
  } catch (err) {
    await Promise.all([...out.values()].map((w) => w.close()));
    throw err;
  }
  return out;
}
