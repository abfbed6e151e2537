import { describe, expect, it } from 'vitest';
import { Dirty } from '../identity-engine.js';
import { MatchScheduler } from './profile-matching.js';

/** A stand-in for ProfileMatching that records its calls (the scheduler only calls these two). */
function recorder(fail = false) {
  const calls: string[][] = [];
  return {
    calls,
    matching: {
      run: async () => {
        calls.push(['run']);
        if (fail) throw new Error('run failed');
        return { records: 0, candidatePairs: 0, merged: 0, refused: 0, review: 0, ms: 0 };
      },
      matchProfiles: async (ids: readonly string[]) => {
        calls.push([...ids]);
        if (fail) throw new Error('incremental failed');
        return undefined;
      },
    },
  };
}

const until = async (check: () => boolean) => {
  while (!check()) await new Promise((r) => setTimeout(r, 5));
};

describe('MatchScheduler', () => {
  it('collects changed profiles and matches them in one incremental run', async () => {
    const { calls, matching } = recorder();
    const s = new MatchScheduler(matching, { incremental: true, delayMs: 20, onError: () => undefined });
    s.note(['a', 'b']);
    s.note(['b', 'c']);
    await until(() => calls.length === 1);
    expect(calls).toEqual([['a', 'b', 'c']]);
    s.note(['d']);
    await until(() => calls.length === 2);
    expect(calls[1]).toEqual(['d']);
    await s.stop();
    s.note(['e']);
    expect(calls).toHaveLength(2);
  });

  it('runs one round at a time: a round noted while another runs starts after it ends, and stop awaits both', async () => {
    const log: string[] = [];
    let release!: () => void;
    const held = new Promise<void>((r) => {
      release = r;
    });
    const matching = {
      run: async () => ({ records: 0, candidatePairs: 0, merged: 0, refused: 0, review: 0, ms: 0 }),
      matchProfiles: async (ids: readonly string[]) => {
        log.push(`start ${ids.join(',')}`);
        if (ids[0] === 'a') await held;
        log.push(`end ${ids.join(',')}`);
        return undefined;
      },
    };
    const s = new MatchScheduler(matching, { incremental: true, delayMs: 5, onError: () => undefined });
    s.note(['a']);
    await until(() => log.length === 1);
    s.note(['b']);
    // The second round's timer fires while the first is held: it must wait for it.
    await new Promise((r) => setTimeout(r, 50));
    expect(log).toEqual(['start a']);
    release();
    const stopped = s.stop();
    await until(() => log.length === 4);
    await stopped;
    expect(log).toEqual(['start a', 'end a', 'start b', 'end b']);
  });

  it('from a commit, takes only the profiles whose traits or identifiers changed', async () => {
    const { calls, matching } = recorder();
    const s = new MatchScheduler(matching, { incremental: true, delayMs: 5, onError: () => undefined });
    s.noteChanges({
      dirty: new Map([
        ['counted', Dirty.row],
        ['renamed', Dirty.row | Dirty.traits],
        ['new-email', Dirty.identifiers],
        ['merged', Dirty.all],
      ]),
    });
    await until(() => calls.length === 1);
    expect(calls[0]).toEqual(['renamed', 'new-email', 'merged']);
    await s.stop();
  });

  it('does nothing incrementally when incremental is off; runs on its schedule; reports errors', async () => {
    const { calls, matching } = recorder(true);
    const errors: unknown[] = [];
    const s = new MatchScheduler(matching, {
      incremental: false,
      everyMs: 10,
      onError: (e) => errors.push(e),
    });
    s.note(['a']);
    await until(() => errors.length >= 2);
    expect(calls.every((c) => c[0] === 'run')).toBe(true);
    expect((errors[0] as Error).message).toBe('run failed');
    await s.stop();
  });
});
