import type { StreamContext, StreamDestination, StreamDestinationKind } from '../stream.js';
import type { OpenDestination } from './model-sync.js';

/**
 * Opens a model's destination from the configured destinations through the registry: the
 * destination of that id, of a streaming kind that takes rows (`capabilities.rows`), created
 * by its connector. What the composition root passes as `openStreamDestination`.
 *
 * @example
 * openStreamDestination: openFromConfig(config.destinations, (type) => streamKind(type), { dataDir, env })
 */
export function openFromConfig(
  destinations: readonly { id: string; type: string }[],
  kindOf: (type: string) => StreamDestinationKind | undefined,
  ctx: StreamContext,
): OpenDestination {
  return async (id): Promise<StreamDestination> => {
    const config = destinations.find((d) => d.id === id);
    if (config === undefined) throw new Error(`no destination "${id}" under destinations:`);
    const kind = kindOf(config.type);
    if (kind === undefined || kind.delivery !== 'stream')
      throw new Error(`destination "${id}" (${config.type}) is not a streaming destination`);
    if (!kind.capabilities.rows)
      throw new Error(`destination "${id}" (${config.type}) does not take reverse-ETL rows`);
    const parsed = kind.config.parse(config);
    return (await kind.connector()).create(parsed, ctx);
  };
}
