import { randomUUID } from 'node:crypto';
import { TributaryError } from '../../errors.js';
import type { RowTarget } from '../../platform/duckdb/duckdb-erase.js';
import type { Store } from '../../store/store.js';
import {
  dedupeTarget,
  type ErasureTarget,
  type Identity,
  MAX_IDENTITIES_PER_REQUEST,
  normalType,
  parseIdentity,
  targetOf,
} from './erasure.js';
import type { Regulation, RegulationStore } from './regulation.js';
import type { Suppressions } from './suppressions.js';

/**
 * Tells a destination that can delete (a stream destination's `deleteIdentities`, a webhook)
 * whom to delete. Resolves once it has taken the request; throws to be asked again later.
 */
export type DeletionNotifier = (identities: readonly Identity[]) => Promise<void>;

/** The identity stage as deletion uses it (`IdentityStage` embedded). */
export interface PersonFinder {
  findPerson(
    identities: readonly Identity[],
  ): Promise<{ profileIds: string[]; messageIds: string[]; identities: Identity[] }>;
  erase(target: ErasureTarget): Promise<void>;
}

/** A store a deletion reaches, by step name (`destination:<id>`, `log`, …). */
export interface ErasableStore {
  step: string;
  erase(target: RowTarget): Promise<unknown>;
}

export interface DeletionServiceOptions {
  regulations: RegulationStore;
  suppressions: Suppressions;
  /** `events` and `failed_events`. */
  store: Pick<Store, 'erase'>;
  /** Identity resolution, when on: widens the request to the person's every identifier and profile. */
  identity?: PersonFinder;
  /** The other stores: the raw log, each destination (`destination:<id>`). Read at every attempt. */
  stores: () => readonly ErasableStore[];
  /** Destinations told of the deletion (`notify:<name>`). */
  notifiers?: () => readonly { name: string; notify: DeletionNotifier }[];
  /**
   * Resolves once the pipeline has handled what the log held when called, so that events
   * collected before the suppression are erased too. Default: at once.
   */
  drained?: () => Promise<void>;
  /**
   * The last step (`scrub`), once every other is done and the regulation's identities are
   * forgotten: overwrites what the erasures left in the engines' free space (DuckDB files).
   */
  scrub?: () => Promise<void>;
  /** Pause between rounds of the worker over unfinished regulations. Default 30 s. */
  retryMs?: number;
  onError?: (err: unknown, regulation: string, step: string) => void;
}

/**
 * Deletion requests (regulations): each names identities, is stored with a step per store
 * (pending, done, failed with the reason), suppresses the identities at once, and is worked
 * by a background worker, retried every `retryMs` until every step is done.
 *
 * One attempt: wait for the pipeline to drain; widen the identities through the identity
 * graph (every identifier of the profiles holding them; suppressed too); erase from `events`
 * and `failed_events`, the log, every destination, then tell the notifiers; the identity
 * store last, because its event assignments name the events the other steps erase; and once
 * every step is done, the store forgets the identities (only the suppression hashes stay).
 */
export class DeletionService {
  private timer: NodeJS.Timeout | undefined;
  private running: Promise<void> | undefined;
  private again = false;
  private stopped = false;

  constructor(private readonly o: DeletionServiceOptions) {}

  /**
   * Parses and stores a request, suppressing its identities at once.
   * @param identities `type:value` texts or `{type, value}` objects, 1 to 5,000.
   * @throws TributaryError `TRIB_ERR_PRIVACY_BAD_REQUEST` for an empty, too large or malformed list.
   */
  async request(identities: readonly unknown[]): Promise<Regulation> {
    if (identities.length === 0 || identities.length > MAX_IDENTITIES_PER_REQUEST)
      throw new TributaryError('TRIB_ERR_PRIVACY_BAD_REQUEST', [
        `name 1 to ${MAX_IDENTITIES_PER_REQUEST} identities (got ${identities.length})`,
      ]);
    const parsed: Identity[] = identities.map((x, i) => {
      const id =
        typeof x === 'string'
          ? parseIdentity(x)
          : typeof x === 'object' && x !== null && typeof (x as Identity).type === 'string'
            ? { type: normalType((x as Identity).type), value: String((x as Identity).value ?? '').trim() }
            : undefined;
      if (!id || id.value === '')
        throw new TributaryError('TRIB_ERR_PRIVACY_BAD_REQUEST', [
          `identity ${i} is not type:value (user_id:u1, email:ada@example.com)`,
        ]);
      return id;
    });
    const steps = this.steps();
    const suppress = parsed.map((id) => this.o.suppressions.hash(id));
    const reg = await this.o.regulations.create({ id: randomUUID(), identities: parsed, steps, suppress });
    this.o.suppressions.add(suppress);
    this.kick();
    return reg;
  }

  private steps(): string[] {
    return [
      'events',
      ...this.o.stores().map((s) => s.step),
      ...(this.o.notifiers?.() ?? []).map((n) => `notify:${n.name}`),
      ...(this.o.identity ? ['identity'] : []),
      ...(this.o.scrub ? ['scrub'] : []),
    ];
  }

  get(id: string): Promise<Regulation | undefined> {
    return this.o.regulations.get(id);
  }

  list(limit = 100): Promise<Regulation[]> {
    return this.o.regulations.list(limit);
  }

  /** Starts the worker: a round now, then one every `retryMs`. */
  start(): void {
    this.stopped = false;
    this.timer ??= setInterval(() => this.kick(), this.o.retryMs ?? 30_000);
    this.timer.unref();
    this.kick();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    clearInterval(this.timer);
    this.timer = undefined;
    await this.running;
  }

  /** Runs a round soon (after the one running, if any). */
  kick(): void {
    if (this.stopped) return;
    if (this.running) {
      this.again = true;
      return;
    }
    this.running = (async () => {
      do {
        this.again = false;
        await this.round().catch((err) => this.o.onError?.(err, '', 'round'));
      } while (this.again && !this.stopped);
    })().finally(() => {
      this.running = undefined;
    });
  }

  /** Resolves once no round is running (tests, shutdown). */
  async idle(): Promise<void> {
    while (this.running) await this.running;
  }

  private async round(): Promise<void> {
    const regs = await this.o.regulations.unfinished(20);
    if (regs.length === 0) return;
    await this.o.drained?.();
    for (const reg of regs) {
      if (this.stopped) return;
      await this.attempt(reg);
    }
  }

  private async attempt(reg: Regulation): Promise<void> {
    const id = reg.id;
    // Destinations configured since the request was made are reached too.
    const known = new Set(reg.steps.map((s) => s.store));
    const missing = this.steps().filter((s) => !known.has(s));
    if (missing.length > 0) await this.o.regulations.addSteps(id, missing);
    const pending = new Set([
      ...reg.steps.filter((s) => s.status !== 'done').map((s) => s.store),
      ...missing,
    ]);
    let extra: Partial<ErasureTarget> = {};
    let resolved = reg.resolved;
    if (this.o.identity && pending.has('identity')) {
      const found = await this.o.identity.findPerson([...reg.identities, ...reg.resolved]);
      extra = { profileIds: found.profileIds, messageIds: found.messageIds };
      const seen = new Set([...reg.identities, ...reg.resolved].map((i) => `${i.type}:${i.value}`));
      const fresh = found.identities.filter((i) => !seen.has(`${i.type}:${i.value}`));
      if (fresh.length > 0) {
        resolved = [...reg.resolved, ...fresh];
        const suppress = fresh.map((i) => this.o.suppressions.hash(i));
        await this.o.regulations.setResolved(id, resolved, suppress);
        this.o.suppressions.add(suppress);
      }
    }
    const target = dedupeTarget(targetOf([...reg.identities, ...resolved], extra));
    const run = async (step: string, work: () => Promise<unknown>) => {
      if (!pending.has(step)) return true;
      try {
        await work();
        await this.o.regulations.setStep(id, step, 'done');
        return true;
      } catch (err) {
        this.o.onError?.(err, id, step);
        await this.o.regulations.setStep(id, step, 'failed', (err as Error)?.message ?? String(err));
        return false;
      }
    };
    let ok = await run('events', () => this.o.store.erase(target));
    for (const s of this.o.stores()) ok = (await run(s.step, () => s.erase(target))) && ok;
    const all = [...reg.identities, ...resolved];
    for (const n of this.o.notifiers?.() ?? [])
      ok = (await run(`notify:${n.name}`, () => n.notify(all))) && ok;
    // Last: its event assignments name the events the other steps look for.
    if (ok && this.o.identity) {
      const identity = this.o.identity;
      ok = await run('identity', () => identity.erase(target));
    }
    if (ok && this.o.scrub) {
      const scrub = this.o.scrub;
      await run('scrub', async () => {
        await this.o.regulations.forgetIdentities(id);
        await scrub();
      });
    }
  }
}
