import { Registry } from 'prom-client';
import { describe, expect, it } from 'vitest';
import { StallWatch } from './health.js';

/** A part whose position, target and error the test sets, on a clock the test moves. */
function setup() {
  let now = Date.UTC(2026, 11, 7);
  const registry = new Registry();
  const watch = new StallWatch({ stallAfterMs: 60_000, now: () => now, registry });
  const part = { position: 10, target: 10, error: undefined as unknown };
  watch.watch({
    name: 'loader',
    position: () => part.position,
    target: () => part.target,
    lastError: () => part.error,
  });
  const stalled = async () =>
    (await registry.getSingleMetric('tributary_stalled')!.get()).values.find(
      (v) => v.labels.component === 'loader',
    )?.value;
  return { watch, part, stalled, pass: (ms: number) => (now += ms) };
}

describe('StallWatch', () => {
  it('is ok while a part is idle, however long', async () => {
    const { watch, pass, stalled } = setup();
    pass(3_600_000);
    expect(watch.check()).toEqual({ status: 'ok', stalled: [] });
    expect(await stalled()).toBe(0);
  });

  it('is ok while a part that is behind keeps advancing', () => {
    const { watch, part, pass } = setup();
    part.target = 1000;
    for (let i = 0; i < 10; i++) {
      pass(50_000);
      part.position += 10;
      expect(watch.check().status).toBe('ok');
    }
  });

  it("gives the message of an error reported as a record (a destination's lastError)", () => {
    const { watch, part, pass } = setup();
    part.target = 20;
    part.error = { message: 'connection terminated unexpectedly', at: new Date() };
    watch.check();
    pass(61_000);
    expect(watch.check().stalled).toEqual([
      expect.objectContaining({ component: 'loader', reason: 'connection terminated unexpectedly' }),
    ]);
  });

  it('is degraded when a part stays at one position while work waits, naming it and its error', async () => {
    const { watch, part, pass, stalled } = setup();
    part.target = 20;
    expect(watch.check().status).toBe('ok');
    pass(59_000);
    expect(watch.check().status).toBe('ok');
    part.error = new Error('Conversion Error: timestamp field value out of range');
    pass(2_000);
    const report = watch.check();
    expect(report.status).toBe('degraded');
    expect(report.stalled).toEqual([
      expect.objectContaining({
        component: 'loader',
        position: 10,
        target: 20,
        reason: 'Conversion Error: timestamp field value out of range',
      }),
    ]);
    expect(await stalled()).toBe(1);

    part.position = 20;
    part.error = undefined;
    expect(watch.check().status).toBe('ok');
    expect(await stalled()).toBe(0);
  });

  it('says a part may hang when it reports no error', () => {
    const { watch, part, pass } = setup();
    part.target = 11;
    watch.check();
    pass(120_000);
    expect(watch.check().stalled[0]!.reason).toMatch(/no error reported/);
  });

  it('dates work that arrives after an idle spell from when it was last seen idle', () => {
    const { watch, part, pass } = setup();
    pass(600_000);
    watch.check();
    part.target = 30;
    pass(30_000);
    expect(watch.check().status).toBe('ok');
    pass(31_000);
    expect(watch.check().status).toBe('degraded');
  });

  it('forgets a part it no longer watches', async () => {
    const registry = new Registry();
    let now = 0;
    const watch = new StallWatch({ stallAfterMs: 10, now: () => now, registry });
    const unwatch = watch.watch({
      name: 'loader:p1',
      position: () => 0,
      target: () => 5,
      lastError: () => 'x',
    });
    now = 100;
    expect(watch.check().status).toBe('degraded');
    unwatch();
    expect(watch.check()).toEqual({ status: 'ok', stalled: [] });
    expect((await registry.getSingleMetric('tributary_stalled')!.get()).values).toEqual([]);
  });
});
