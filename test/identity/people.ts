import { prng } from '../../bench/lib/events.js';
import type { TestEvent } from './harness.js';

const FIRST = [
  'oliver',
  'amelia',
  'harry',
  'isla',
  'jack',
  'ava',
  'george',
  'mia',
  'noah',
  'emily',
  'leo',
  'grace',
];
const LAST = [
  'smith',
  'jones',
  'taylor',
  'brown',
  'wilson',
  'evans',
  'thomas',
  'roberts',
  'walker',
  'wright',
  'wojciechowski',
  'okafor',
];
const CITIES = ['london', 'leeds', 'bristol', 'york', 'bath', 'derby'];

export interface Person {
  first: string;
  last: string;
  dob: string;
  city: string;
}

/**
 * People (seeded), each as one or two identify calls from different devices: no identifier
 * in common; the second copy of a person sometimes has a typo in the surname.
 */
export function people(n: number, seed: number): { persons: Person[]; events: TestEvent[] } {
  const rnd = prng(seed);
  const pick = <T>(xs: readonly T[]) => xs[Math.floor(rnd() * xs.length)]!;
  const persons: Person[] = [];
  const events: TestEvent[] = [];
  for (let i = 0; i < n; i++) {
    const d = new Date(
      Date.UTC(1940 + Math.floor(rnd() * 60), Math.floor(rnd() * 12), 1 + Math.floor(rnd() * 28)),
    );
    const p = { first: pick(FIRST), last: pick(LAST), dob: d.toISOString().slice(0, 10), city: pick(CITIES) };
    persons.push(p);
    const copies = i % 3 === 0 ? 1 : 2;
    for (let c = 0; c < copies; c++) {
      const last = c === 1 && i % 2 === 0 ? `${p.last.slice(0, 2)}${p.last.slice(3)}` : p.last;
      events.push({
        type: 'identify',
        messageId: `m-${i}-${c}`,
        anonymousId: `anon-${i}-${c}`,
        at: events.length,
        traits: { first_name: p.first, last_name: last, dob: p.dob, city: p.city },
      });
    }
  }
  return { persons, events };
}
