import { Counter, Gauge, type Registry } from 'prom-client';
import type { IdentityChanges } from './identity-engine.js';

/** Prometheus metrics of the identity stage, registered on the server's registry. */
export class IdentityMetrics {
  private readonly resolved: Counter<'action'>;
  private readonly leftOut: Counter<'reason'>;
  private readonly merges: Counter;
  private readonly unmerges: Counter;

  /** `state().lag`: log offsets the loader has stored and identity has not resolved yet. */
  constructor(registry: Registry, state: () => { profiles: number; lag: number }) {
    const registers = [registry];
    this.resolved = new Counter({
      name: 'tributary_identity_events_resolved_total',
      help: 'Stored events the identity stage resolved (committed), by decision: new, attach, merge, none.',
      labelNames: ['action'],
      registers,
    });
    this.leftOut = new Counter({
      name: 'tributary_identity_identifiers_left_out_total',
      help: 'Identifiers not used, by reason (blocked_value, invalid, limit:<type>, blocked_link:…).',
      labelNames: ['reason'],
      registers,
    });
    this.merges = new Counter({
      name: 'tributary_identity_merges_total',
      help: 'Profiles merged.',
      registers,
    });
    this.unmerges = new Counter({
      name: 'tributary_identity_unmerges_total',
      help: 'Merges undone.',
      registers,
    });
    new Gauge({
      name: 'tributary_identity_profiles',
      help: 'Unified profiles.',
      registers,
      collect() {
        this.set(state().profiles);
      },
    });
    new Gauge({
      name: 'tributary_identity_lag_events',
      help: 'Log offsets the warehouse loader has stored and the identity stage has not resolved yet.',
      registers,
      collect() {
        this.set(state().lag);
      },
    });
  }

  /** Counts a committed change set. */
  committed(changes: IdentityChanges): void {
    if (changes.replacedOffsets.length > 0) {
      // An unmerge: its replayed decisions and merges were counted when first resolved.
      this.unmerges.inc(changes.unmerged.length);
      return;
    }
    for (const d of changes.decisions) {
      this.resolved.inc({ action: d.action });
      for (const l of d.leftOut)
        this.leftOut.inc({ reason: l.reason.startsWith('blocked_link:') ? 'blocked_link' : l.reason });
    }
    if (changes.merges.length > 0) this.merges.inc(changes.merges.length);
  }
}
