import { Counter, collectDefaultMetrics, Gauge, Registry } from 'prom-client';

/** The Prometheus metrics of one server. A registry each, so tests can run several servers. */
export class Metrics {
  readonly registry = new Registry();
  readonly received: Counter<'source'>;
  readonly accepted: Counter<'source'>;
  readonly rejected: Counter<'source' | 'code'>;
  readonly loaded: Counter<'source'>;
  readonly deduplicated: Counter<'source'>;
  readonly failedStored: Counter<'source'>;
  readonly requestsRefused: Counter<'code'>;

  /**
   * `log.loaded`: where the warehouse loader is, for the lag gauge; absent where no single
   * loader follows the log (a scale-out process: its partitions' backlogs are the NATS
   * consumers' pending counts).
   */
  constructor(log: { endOffset: () => number; loaded?: () => number }) {
    const registers = [this.registry];
    collectDefaultMetrics({ register: this.registry, prefix: 'tributary_' });
    this.received = new Counter({
      name: 'tributary_events_received_total',
      help: 'Events received in requests that passed authentication and parsing.',
      labelNames: ['source'],
      registers,
    });
    this.accepted = new Counter({
      name: 'tributary_events_accepted_total',
      help: 'Events accepted into the durable log.',
      labelNames: ['source'],
      registers,
    });
    this.rejected = new Counter({
      name: 'tributary_events_rejected_total',
      help: 'Events rejected by the envelope checks (kept in the failed-event store).',
      labelNames: ['source', 'code'],
      registers,
    });
    this.loaded = new Counter({
      name: 'tributary_events_loaded_total',
      help: 'Events written to the warehouse events table.',
      labelNames: ['source'],
      registers,
    });
    this.deduplicated = new Counter({
      name: 'tributary_events_deduplicated_total',
      help: 'Events dropped as repeats of a (source, messageId) seen within the dedupe window.',
      labelNames: ['source'],
      registers,
    });
    this.failedStored = new Counter({
      name: 'tributary_failed_events_stored_total',
      help: 'Rejected events written to the failed_events table.',
      labelNames: ['source'],
      registers,
    });
    this.requestsRefused = new Counter({
      name: 'tributary_requests_refused_total',
      help: 'Collection requests answered with an error, by error code.',
      labelNames: ['code'],
      registers,
    });
    new Gauge({
      name: 'tributary_log_end_offset',
      help: 'Next offset the event log will assign.',
      registers,
      collect() {
        this.set(log.endOffset());
      },
    });
    const loaded = log.loaded;
    if (loaded) {
      new Gauge({
        name: 'tributary_log_lag_events',
        help: 'Records in the log not yet handled by the warehouse loader.',
        registers,
        collect() {
          this.set(Math.max(0, log.endOffset() - loaded()));
        },
      });
    }
  }
}
