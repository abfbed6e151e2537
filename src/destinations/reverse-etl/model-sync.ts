import { TributaryError } from '../../errors.js';
import type { ChangeKind, ModelChange, ModelStore, RunCounts } from '../../store/model-store.js';
import type { Delivery, DeliveryOp, SendResult, StreamDestination } from '../stream.js';
import type { ModelConfig, SyncMode } from './spec.js';

/**
 * Opens the streaming destination of this id for one run; the run closes it when done. The
 * composition root builds it from `destinations:` and the registry.
 */
export type OpenDestination = (destinationId: string) => Promise<StreamDestination>;

/**
 * The stand-in until the composition root opens streaming destinations from `destinations:`
 * through the registry: every model's run fails with `TRIB_ERR_RETL_DESTINATION`, naming it.
 */
export const noStreamDestinations: OpenDestination = async (id) => {
  throw new Error(`no streaming destination "${id}" is configured in this process`);
};

export interface ModelSyncOptions {
  store: ModelStore;
  openDestination: OpenDestination;
  /**
   * Rows the destination took are recorded as synced every this many rows (and at the end):
   * a crash in between sends at most these again (their idempotency keys let the receiver
   * drop them). Default 20,000.
   */
  commitEvery?: number;
}

export interface ModelRunSummary extends RunCounts {
  runId: string;
  model: string;
  status: 'succeeded' | 'failed';
  /** Rows the model returned (undefined when its SQL failed). */
  rows?: number;
  /** The SQL's or the destination's error; or the first failures of rows. */
  error?: string;
  durationMs: number;
}

/** What each sync mode sends, as which op, and takes into the snapshot without sending. */
const PLAN: Record<SyncMode, { send: Partial<Record<ChangeKind, DeliveryOp>>; accept: ChangeKind[] }> = {
  insert: { send: { added: 'insert' }, accept: ['changed', 'removed'] },
  update: { send: { added: 'update', changed: 'update' }, accept: ['removed'] },
  upsert: { send: { added: 'upsert', changed: 'upsert' }, accept: ['removed'] },
  mirror: { send: { added: 'upsert', changed: 'upsert', removed: 'delete' }, accept: [] },
};

/** Row errors kept in a run's record. */
const ERRORS_KEPT = 5;

/**
 * The primary key as people and receivers read it: the value of a one-column key (`42`,
 * `ada@example.com`), else the values as a JSON array.
 */
export function displayKey(key: string): string {
  const values = JSON.parse(key) as unknown[];
  if (values.length !== 1) return key;
  const v = values[0];
  return typeof v === 'string' ? v : JSON.stringify(v);
}

/** A change as a delivery: idempotency key `<model>:<primary key>:<checksum>`, ordered by primary key. */
export function toDelivery(model: string, c: ModelChange, op: DeliveryOp): Delivery {
  const pk = displayKey(c.key);
  return {
    key: op === 'delete' ? `${model}:${pk}:${c.checksum}:delete` : `${model}:${pk}:${c.checksum}`,
    orderKey: pk,
    op,
    payload: JSON.parse(c.payload) as Record<string, unknown>,
  };
}

/**
 * One run of a model: its SQL diffed against the last synced snapshot in the store, the
 * changes the sync mode sends delivered in batches, and each row the destination took
 * recorded as synced. A row the destination failed or could not take now is not recorded, so
 * the next run finds it in the diff again; a model whose SQL fails leaves the snapshot as it
 * was. `signal` stops the run after the batch in flight (what was taken is recorded).
 */
export async function runModel(
  model: ModelConfig,
  opts: ModelSyncOptions,
  trigger: string,
  signal?: AbortSignal,
): Promise<ModelRunSummary> {
  const { store } = opts;
  const started = Date.now();
  const runId = await store.startRun(model.id, trigger);
  const counts: RunCounts = { added: 0, changed: 0, removed: 0, failed: 0 };
  const errors: string[] = [];
  const finish = async (status: 'succeeded' | 'failed', error?: string, rows?: number) => {
    await store.finishRun(runId, status, counts, error);
    return {
      runId,
      model: model.id,
      status,
      ...counts,
      ...(rows === undefined ? {} : { rows }),
      ...(error === undefined ? {} : { error }),
      durationMs: Date.now() - started,
    };
  };

  let destination: StreamDestination;
  try {
    destination = await opts.openDestination(model.destination);
  } catch (err) {
    const e = new TributaryError(
      'TRIB_ERR_RETL_DESTINATION',
      [model.id, model.destination, (err as Error).message],
      { cause: err },
    );
    return finish('failed', `${e.code}: ${e.message}`);
  }
  try {
    let diff: Awaited<ReturnType<ModelStore['diff']>>;
    try {
      diff = await store.diff({
        model: model.id,
        sql: model.sql,
        primaryKey: model.primaryKey,
        mapping: model.mapping,
        timeoutMs: model.queryTimeout,
      });
    } catch (err) {
      const code = err instanceof TributaryError ? `${err.code}: ` : '';
      return await finish('failed', `${code}${(err as Error).message}`);
    }
    try {
      const plan = PLAN[model.syncMode];
      counts.failed += diff.counts.invalid;
      if (diff.counts.invalidReason !== undefined) errors.push(diff.counts.invalidReason);
      await diff.accept(plan.accept);
      type Synced = { key: string; checksum: string };
      let pending = { added: [] as Synced[], changed: [] as Synced[], deleted: [] as string[] };
      const size = () => pending.added.length + pending.changed.length + pending.deleted.length;
      const flush = async () => {
        if (size() === 0) return;
        await store.commit({ model: model.id, ...pending });
        pending = { added: [], changed: [], deleted: [] };
      };
      const commitEvery = opts.commitEvery ?? 20_000;
      const kinds = Object.keys(plan.send) as ChangeKind[];
      for await (const page of diff.changes(kinds, model.batchSize)) {
        if (signal?.aborted) break;
        const deliveries = page.map((c) => toDelivery(model.id, c, plan.send[c.kind]!));
        const results = await sendBatch(destination, deliveries, model.timeout, signal);
        page.forEach((c, i) => {
          const r = results[i] ?? {
            status: 'retryable',
            error: 'the destination gave no result for the row',
          };
          if (r.status === 'ok') {
            counts[c.kind]++;
            if (c.kind === 'removed') pending.deleted.push(c.key);
            else pending[c.kind].push({ key: c.key, checksum: c.checksum });
            return;
          }
          counts.failed++;
          if (errors.length < ERRORS_KEPT)
            errors.push(`${displayKey(c.key)}: ${r.status === 'failed' ? `${r.code}: ` : ''}${r.error}`);
        });
        if (size() >= commitEvery) await flush();
      }
      await flush();
      if (signal?.aborted)
        return await finish('failed', 'stopped; the next run sends the rows not sent', diff.counts.rows);
      return await finish('succeeded', errors.length > 0 ? errors.join('\n') : undefined, diff.counts.rows);
    } finally {
      await diff.close();
    }
  } catch (err) {
    // The store failed (the snapshot keeps what was committed): the run is recorded failed if it can be.
    await store.finishRun(runId, 'failed', counts, (err as Error).message).catch(() => undefined);
    throw err;
  } finally {
    await destination.close().catch(() => undefined);
  }
}

/**
 * One batch through the destination, its answer one result per delivery. A throw or a
 * timeout makes the whole batch retryable, as the contract says (`../stream.ts`).
 */
async function sendBatch(
  destination: StreamDestination,
  batch: readonly Delivery[],
  timeoutMs: number,
  signal: AbortSignal | undefined,
): Promise<SendResult[]> {
  const timeout = AbortSignal.timeout(timeoutMs);
  const s = signal ? AbortSignal.any([signal, timeout]) : timeout;
  // A destination that does not honour the signal does not hold the run either.
  let onAbort!: () => void;
  const aborted = new Promise<never>((_, reject) => {
    onAbort = () => reject(new Error('aborted'));
    s.addEventListener('abort', onAbort, { once: true });
  });
  try {
    return await Promise.race([destination.send(batch, s), aborted]);
  } catch (err) {
    const error = s.aborted ? `no answer within ${timeoutMs} ms` : (err as Error).message;
    return batch.map(() => ({ status: 'retryable', error }));
  } finally {
    s.removeEventListener('abort', onAbort);
    aborted.catch(() => undefined);
  }
}
