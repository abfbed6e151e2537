import { describe, expect, it } from 'vitest';
import { extractWriteKey } from './write-key.js';

const basic = (s: string) => `Basic ${Buffer.from(s).toString('base64')}`;

describe('extractWriteKey', () => {
  it('reads Basic auth and strips exactly one trailing colon', () => {
    expect(extractWriteKey({ authorization: basic('wk_1:') }, {}, undefined)).toBe('wk_1');
    expect(extractWriteKey({ authorization: basic('wk_1') }, {}, undefined)).toBe('wk_1');
    expect(extractWriteKey({ authorization: basic('wk_1::') }, {}, undefined)).toBe('wk_1:');
  });

  it('never splits a key at its first colon (Jitsu keys are id:secret)', () => {
    expect(extractWriteKey({ authorization: basic('js.key:s3cret') }, {}, undefined)).toBe('js.key:s3cret');
    expect(extractWriteKey({ authorization: basic('js.key:s3cret:') }, {}, undefined)).toBe('js.key:s3cret');
  });

  it('reads X-Write-Key, ?writeKey= and the body, in that order after Basic auth', () => {
    expect(extractWriteKey({ 'x-write-key': 'h' }, { writeKey: 'q' }, { writeKey: 'b' })).toBe('h');
    expect(extractWriteKey({}, { writeKey: 'q' }, { writeKey: 'b' })).toBe('q');
    expect(extractWriteKey({}, {}, { writeKey: 'b' })).toBe('b');
    expect(extractWriteKey({ authorization: basic('a:') }, { writeKey: 'q' }, { writeKey: 'b' })).toBe('a');
  });

  it('returns undefined when no key is given anywhere', () => {
    expect(extractWriteKey({}, {}, {})).toBeUndefined();
    expect(extractWriteKey({ authorization: 'Bearer x' }, {}, { writeKey: 5 })).toBeUndefined();
    expect(extractWriteKey({ authorization: basic(':') }, {}, undefined)).toBeUndefined();
  });
});
