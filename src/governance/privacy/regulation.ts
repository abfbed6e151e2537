import type { Identity } from './erasure.js';

/** Where a regulation stands in one store. */
export type StepStatus = 'pending' | 'done' | 'failed';

export interface RegulationStep {
  /** The store: `identity`, `events`, `log`, `destination:<id>`, `objects`, `notify:<name>`, … */
  store: string;
  status: StepStatus;
  /** Why the last attempt failed (the step is retried until done). */
  reason: string | null;
  attempts: number;
  updatedAt: string;
}

/** A request to delete a person everywhere (and suppress their later events). */
export interface Regulation {
  id: string;
  createdAt: string;
  /** `pending` until every step is done; `failed` while a step's last attempt failed. */
  status: StepStatus;
  /** The identities as asked. */
  identities: Identity[];
  /** The identities found through the identity graph (filled by the `identity` step). */
  resolved: Identity[];
  steps: RegulationStep[];
}

/**
 * The regulations and the suppression list, in the state store of either deployment
 * (DuckDB: `src/store/duckdb/duckdb-regulation-store.ts`; PostgreSQL:
 * `src/store/postgres/postgres-regulation-store.ts`).
 */
export interface RegulationStore {
  /**
   * Stores a new regulation with its steps `pending`, and adds `suppress` (keyed hashes of
   * its identities, see `Suppressions.hash`) to the suppression list, in one transaction.
   */
  create(regulation: {
    id: string;
    identities: Identity[];
    steps: string[];
    suppress: string[];
  }): Promise<Regulation>;
  get(id: string): Promise<Regulation | undefined>;
  /** Newest first. */
  list(limit: number): Promise<Regulation[]>;
  /** Regulations with a step not done, oldest first. */
  unfinished(limit: number): Promise<Regulation[]>;
  /**
   * Records the outcome of an attempt at one step; the regulation's status follows its steps.
   * When it makes every step done, the regulation's identities are forgotten in the same
   * transaction (see `forgetIdentities`).
   */
  setStep(id: string, store: string, status: StepStatus, reason?: string): Promise<void>;
  /** Adds steps (a destination configured later) as `pending`, unless present. */
  addSteps(id: string, stores: readonly string[]): Promise<void>;
  /** Records the identities the identity graph widened the request to, and suppresses their hashes. */
  setResolved(id: string, resolved: readonly Identity[], suppress: readonly string[]): Promise<void>;
  /**
   * Forgets the identities of a regulation whose steps are all done (they were kept only to
   * retry the steps): what stays is its id, its steps and the suppression hashes.
   */
  forgetIdentities(id: string): Promise<void>;
  /** Every suppressed identity, as the keyed hashes given to `create` and `setResolved`. */
  suppressed(): Promise<string[]>;
  close(): Promise<void>;
}

/** The key of an identity in the suppression list: the value as matched at collection. */
export function identityKey(id: Identity): string {
  const v = id.type === 'email' ? id.value.trim().toLowerCase() : id.value;
  return `${id.type}:${v}`;
}

/** The regulation's status from its steps: done when all are, failed when one failed. */
export function overallStatus(steps: readonly RegulationStep[]): StepStatus {
  if (steps.some((s) => s.status === 'failed')) return 'failed';
  if (steps.every((s) => s.status === 'done')) return 'done';
  return 'pending';
}
