/**
 * Request bodies for the ingest benchmark: realistic Segment track events, pre-serialized
 * into a pool of distinct bodies. Every body handed out gets fresh messageIds, written in
 * place over fixed-width placeholders, so each event sent in a run is unique without
 * paying for JSON.stringify on the load generator's thread.
 */
import { randomBytes } from 'node:crypto';

/** The track events of a small shop, used by every benchmark. */
export const EVENT_NAMES = [
  'Product Viewed',
  'Product Added',
  'Cart Viewed',
  'Checkout Started',
  'Order Completed',
  'Coupon Applied',
  'Signed Up',
  'Newsletter Subscribed',
];
const PRODUCTS = [
  ['sku-10021', 'Trail Shoes', 89.99],
  ['sku-20417', 'Wool Beanie', 24.5],
  ['sku-31102', 'Water Bottle', 32],
  ['sku-44870', 'Rain Jacket', 149.95],
  ['sku-58311', 'Running Socks', 19.99],
] as const;
const USER_AGENTS = [
  'Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 Safari/605.1.15',
  'Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 Chrome/124.0.0.0',
  'Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15',
];
const REFERRERS = [
  'https://www.google.com/',
  'https://www.instagram.com/',
  '',
  'https://news.ycombinator.com/',
];

/** Deterministic PRNG (mulberry32), so pools are reproducible apart from the ids. */
export function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

function pick<T>(rand: () => number, items: readonly T[]): T {
  return items[Math.floor(rand() * items.length)]!;
}

function hex(rand: () => number, n: number): string {
  let s = '';
  for (let i = 0; i < n; i++) s += Math.floor(rand() * 16).toString(16);
  return s;
}

const COUNTER_DIGITS = 12;
const PLACEHOLDER_TAIL = 'x'.repeat(COUNTER_DIGITS);

/**
 * Unique messageIds shaped like UUIDv4s: a random 24-character prefix per run and a
 * 12-hex-digit counter, shared by every pool of the run.
 */
export class MessageIds {
  readonly prefix: string;
  private next = 0;

  constructor() {
    const r = randomBytes(8).toString('hex');
    const v = '89ab'[randomBytes(1)[0]! & 3];
    this.prefix = `${r.slice(0, 8)}-${r.slice(8, 12)}-4${r.slice(12, 15)}-${v}${randomBytes(2).toString('hex').slice(0, 3)}-`;
  }

  /** Writes the next counter value into `buf` at `offset` (12 ASCII hex digits). */
  writeNext(buf: Buffer, offset: number): void {
    buf.write(this.next.toString(16).padStart(COUNTER_DIGITS, '0'), offset, COUNTER_DIGITS, 'latin1');
    this.next++;
  }

  get issued(): number {
    return this.next;
  }

  placeholder(): string {
    return this.prefix + PLACEHOLDER_TAIL;
  }
}

function makeEvent(rand: () => number, ids: MessageIds, withType: boolean, now: number) {
  const name = pick(rand, EVENT_NAMES);
  const [sku, title, price] = pick(rand, PRODUCTS);
  const user = Math.floor(rand() * 100_000);
  const slug = title.toLowerCase().replace(/[^a-z0-9]+/g, '-');
  const referrer = pick(rand, REFERRERS);
  return {
    ...(withType ? { type: 'track' } : {}),
    event: name,
    userId: `user-${String(user).padStart(6, '0')}`,
    anonymousId: `${hex(rand, 8)}-${hex(rand, 4)}-4${hex(rand, 3)}-a${hex(rand, 3)}-${hex(rand, 12)}`,
    messageId: ids.placeholder(),
    timestamp: new Date(now - Math.floor(rand() * 5000)).toISOString(),
    properties: {
      product_id: sku,
      name: title,
      price,
      quantity: 1 + Math.floor(rand() * 3),
      currency: 'USD',
    },
    context: {
      library: { name: 'analytics.js', version: '2.11.1' },
      page: {
        path: `/products/${slug}`,
        title,
        referrer,
      },
      userAgent: pick(rand, USER_AGENTS),
      ip: `203.0.113.${1 + Math.floor(rand() * 254)}`,
    },
  };
}

interface Template {
  buf: Buffer;
  /** Offsets of the counter part of each messageId placeholder. */
  offsets: number[];
}

export interface BodyPoolOptions {
  /** Events per body; 1 means a single-event body (for /v1/track), else `{"batch":[...]}`. */
  eventsPerRequest: number;
  /** Distinct bodies to pre-generate and cycle through. */
  size: number;
  seed: number;
}

/** A cycle of pre-serialized bodies whose messageIds are refreshed on every use. */
export class BodyPool {
  readonly eventsPerRequest: number;
  readonly size: number;
  /** Mean body size, bytes. */
  readonly meanBodyBytes: number;
  /** Mean serialized size of one event, bytes. */
  readonly meanEventBytes: number;
  private readonly templates: Template[] = [];
  private cursor = 0;

  constructor(
    private readonly ids: MessageIds,
    opts: BodyPoolOptions,
  ) {
    this.eventsPerRequest = opts.eventsPerRequest;
    this.size = opts.size;
    const rand = prng(opts.seed);
    const now = Date.now();
    const placeholder = Buffer.from(`"messageId":"${ids.placeholder()}"`);
    const counterShift = '"messageId":"'.length + ids.prefix.length;
    let bodyBytes = 0;
    let eventBytes = 0;
    for (let t = 0; t < opts.size; t++) {
      let json: string;
      if (opts.eventsPerRequest === 1) {
        const e = makeEvent(rand, ids, false, now);
        json = JSON.stringify(e);
        eventBytes += Buffer.byteLength(json);
      } else {
        const batch = [];
        for (let i = 0; i < opts.eventsPerRequest; i++) {
          const e = makeEvent(rand, ids, true, now);
          eventBytes += Buffer.byteLength(JSON.stringify(e));
          batch.push(e);
        }
        json = JSON.stringify({ batch, sentAt: new Date(now).toISOString() });
      }
      const buf = Buffer.from(json);
      const offsets: number[] = [];
      for (let at = buf.indexOf(placeholder); at !== -1; at = buf.indexOf(placeholder, at + 1)) {
        offsets.push(at + counterShift);
      }
      if (offsets.length !== opts.eventsPerRequest) throw new Error('messageId placeholder not found');
      bodyBytes += buf.length;
      this.templates.push({ buf, offsets });
    }
    this.meanBodyBytes = Math.round(bodyBytes / opts.size);
    this.meanEventBytes = Math.round(eventBytes / (opts.size * opts.eventsPerRequest));
  }

  /**
   * The next body, with fresh messageIds. The buffer is shared with later calls: the caller
   * must copy or send it before calling `next()` again (autocannon copies it synchronously).
   */
  next(): Buffer {
    const t = this.templates[this.cursor]!;
    this.cursor = (this.cursor + 1) % this.templates.length;
    for (const offset of t.offsets) this.ids.writeNext(t.buf, offset);
    return t.buf;
  }
}
