import type { Logger } from 'pino';
import type { EventLog } from '../log/event-log.js';
import { loadConnector } from '../sources/registry.js';
import { SourceRunner } from '../sources/runner.js';
import type { ConfiguredSource } from '../sources/source-service.js';
import { SourceService } from '../sources/source-service.js';
import type { SourceStore } from '../store/source-store.js';

/**
 * The pull sources of a composition root: a runner on `store` and `log` with the registry's
 * connectors, under a service that schedules them. With a `logger`, retried reads are logged
 * as warnings and failed scheduled syncs as errors; without one (a one-off import), neither is.
 */
export function pullSources(
  sources: readonly ConfiguredSource[],
  deps: { store: SourceStore; log: EventLog; baseDir: string; logger?: Logger },
): SourceService {
  const { store, log, baseDir, logger } = deps;
  if (logger === undefined)
    return new SourceService(sources, new SourceRunner({ store, log, connector: loadConnector, baseDir }));
  return new SourceService(
    sources,
    new SourceRunner({
      store,
      log,
      connector: loadConnector,
      baseDir,
      onRetry: (id, attempt, err) =>
        logger.warn(
          { err, source: id, attempt },
          'source read failed; retrying from the last committed state',
        ),
    }),
    (id, err) => logger.error({ err, source: id }, 'scheduled sync failed'),
  );
}
