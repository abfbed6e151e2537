import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { MappingConfig, PrivacyConfig } from '../../config/quality-schema.js';
import type { JsonObject } from '../../spec/event.js';
import { MappingStage, wordKey } from '../stages/mapping-stage.js';
import { PiiClassifier } from './pii-classifier.js';

/** Canonical keys of the built-in classes, with values of each. */
const CLASSES = {
  email: fc
    .tuple(fc.stringMatching(/^[a-z][a-z0-9]{2,8}$/), fc.constantFrom('Example.com', 'mail.test'))
    .map(([l, d]) => `${l}@${d}`),
  phone: fc.integer({ min: 2000, max: 9999 }).map((n) => `+1 415 555 ${n}`),
  ssn: fc.integer({ min: 1000, max: 9999 }).map((n) => `123-45-${n}`),
  password: fc.stringMatching(/^[A-Za-z0-9]{8,12}$/),
  address: fc.stringMatching(/^[1-9][0-9]{1,3} [A-Z][a-z]{3,8} Street$/),
};
type Cls = keyof typeof CLASSES;

const word = fc.stringMatching(/^[a-z][a-z0-9]{0,6}$/);
/** An alias as a configuration names it (snake_case words) and a spelling of it a client sends. */
const alias = fc.array(word, { minLength: 1, maxLength: 3 }).chain((w) =>
  fc.record({
    configured: fc.constant(w.join('_')),
    sent: fc.constantFrom(
      w.join('_'),
      w.join('-').toUpperCase(),
      w.map((x, i) => (i === 0 ? x : x[0]!.toUpperCase() + x.slice(1))).join(''),
      w.map((x) => x[0]!.toUpperCase() + x.slice(1)).join(' '),
    ),
  }),
);

describe('privacy policy over mapping aliases (property)', () => {
  it('for any configured alias, a field under hash, mask, drop or block is never in clear, before or after mapping', () => {
    fc.assert(
      fc.property(
        fc
          .constantFrom(...(Object.keys(CLASSES) as Cls[]))
          .chain((cls) => fc.tuple(fc.constant(cls), CLASSES[cls] as fc.Arbitrary<string>)),
        fc.constantFrom('hash', 'mask', 'drop', 'block'),
        alias,
        fc.constantFrom('properties', 'traits', 'context.traits'),
        fc.constantFrom('', ' ', '\t '),
        fc.context(),
        ([cls, value], action, a, where, pad, ctx) => {
          // Only spellings the mapping takes for the alias (`F8YRE` is the words f8, yre).
          fc.pre(wordKey(a.sent) === wordKey(a.configured));
          const mapping = new MappingStage(MappingConfig.parse({ fields: { [cls]: [a.configured] } }));
          const pii = new PiiClassifier(PrivacyConfig.parse({ policy: { [action]: [cls] } }), 'salt', {
            [cls]: [a.configured],
          });
          const fields = { [a.sent]: `${pad}${value}${pad}` };
          const event: JsonObject = {
            type: where === 'traits' ? 'identify' : 'track',
            event: 'E',
            userId: 'u',
          };
          if (where === 'context.traits') event.context = { traits: fields };
          else event[where] = fields;
          const result = pii.apply(event);
          const logged = JSON.stringify(event);
          mapping.map(event);
          const loaded = JSON.stringify(event);
          ctx.log(`${logged} → ${loaded}`);
          const stored = where === 'context.traits' ? (event.context as JsonObject).traits : event[where];
          if (action !== 'drop' && action !== 'block')
            expect(Object.keys(stored as JsonObject)).toEqual([cls]);
          expect(result.blocked).toBe(action === 'block');
          for (const text of [logged, loaded]) expect(text.toLowerCase()).not.toContain(value.toLowerCase());
        },
      ),
      { numRuns: 300 },
    );
  });
});
