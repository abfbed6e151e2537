import { describe, expect, it } from 'vitest';
import { shutdownWithin } from './shutdown.js';

describe('shutdownWithin', () => {
  it('resolves when the work finishes', async () => {
    const done: string[] = [];
    await shutdownWithin(60_000, async ({ at }) => {
      at('one');
      done.push('one');
    });
    expect(done).toEqual(['one']);
  });

  it('ends a shutdown whose step never finishes, naming the step', async () => {
    const stuck = shutdownWithin(50, async ({ at }) => {
      at('the loader stopping');
      await new Promise(() => {});
    });
    await expect(stuck).rejects.toMatchObject({
      code: 'TRIB_ERR_SERVER_SHUTDOWN_TIMEOUT',
      message: expect.stringContaining('the loader stopping'),
    });
  });

  it('cuts a step given upTo short and goes on to the next', async () => {
    const steps: string[] = [];
    await shutdownWithin(60_000, async ({ upTo, at }) => {
      at('draining');
      await upTo(new Promise(() => {}), 10);
      steps.push('after the drain');
    });
    expect(steps).toEqual(['after the drain']);
  });

  it('passes errors of the work through', async () => {
    await expect(
      shutdownWithin(60_000, async () => {
        throw new Error('disk gone');
      }),
    ).rejects.toThrow('disk gone');
  });
});
