import { Counter, type Registry } from 'prom-client';
import type { PrivacyResult } from '../pipeline/privacy/pii-classifier.js';
import type { StageOutcome } from '../pipeline/stages/runner.js';

/** Metrics of the data-quality stages, on the server's registry. */
export class QualityMetrics {
  readonly piiFindings: Counter<'source' | 'class' | 'category' | 'action'>;
  readonly piiBlocked: Counter<'source' | 'category'>;
  readonly outcomes: Counter<'source' | 'stage' | 'outcome'>;
  readonly retried: Counter<'source'>;

  constructor(registry: Registry) {
    const registers = [registry];
    this.piiFindings = new Counter({
      name: 'tributary_pii_findings_total',
      help: 'Fields the privacy classifier matched, by class, category and the action taken (never values).',
      labelNames: ['source', 'class', 'category', 'action'],
      registers,
    });
    this.piiBlocked = new Counter({
      name: 'tributary_pii_blocked_events_total',
      help: 'Events blocked at collection by the privacy policy, by the category that blocked them.',
      labelNames: ['source', 'category'],
      registers,
    });
    this.outcomes = new Counter({
      name: 'tributary_pipeline_events_total',
      help: 'Fates of accepted events in the pipeline, by the stage that decided: passed, blocked, failed, filtered, deduplicated.',
      labelNames: ['source', 'stage', 'outcome'],
      registers,
    });
    this.retried = new Counter({
      name: 'tributary_failed_events_retried_total',
      help: 'Failed events sent through the pipeline again (also counted as received and accepted).',
      labelNames: ['source'],
      registers,
    });
  }

  privacy(source: string, result: PrivacyResult): void {
    for (const f of result.findings) {
      this.piiFindings.inc({ source, class: f.className, category: f.category, action: f.action });
    }
    if (result.blocked) {
      const red = result.findings.some((f) => f.action === 'block' && f.category === 'red');
      this.piiBlocked.inc({ source, category: red ? 'red' : 'yellow' });
    }
  }

  outcome(source: string, stage: string, outcome: StageOutcome, n: number): void {
    this.outcomes.inc({ source, stage, outcome }, n);
  }
}
