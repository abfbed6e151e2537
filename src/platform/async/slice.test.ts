import { afterEach, describe, expect, it, vi } from 'vitest';
import { SLICE_MS, Slice } from './slice.js';

describe('Slice', () => {
  afterEach(() => {
    vi.useRealTimers();
  });

  it('is due once the work has held the event loop for its time, and starts again after a pass', async () => {
    vi.useFakeTimers({ toFake: ['performance'] });
    const slice = new Slice();
    vi.advanceTimersByTime(SLICE_MS - 1);
    expect(slice.due()).toBe(false);
    vi.advanceTimersByTime(1);
    expect(slice.due()).toBe(true);
    await slice.pass();
    expect(slice.due()).toBe(false);
  });

  it('lets a callback that was waiting run before the work goes on', async () => {
    const order: string[] = [];
    const slice = new Slice();
    setImmediate(() => order.push('request'));
    order.push('work');
    await slice.pass();
    order.push('more work');
    expect(order).toEqual(['work', 'request', 'more work']);
  });
});
