import { existsSync, readFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import { createRequire } from 'node:module';
import type { AddressInfo } from 'node:net';
import { dirname, join } from 'node:path';
import { type Browser, type BrowserContext, chromium, type Page, type Request } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  type StoredRow,
  sqlList,
  startTestServer,
  storedRows,
  type TestServer,
  WRITE_KEY,
} from './helpers.js';

/**
 * Compatibility with the real browser SDKs, run in a real headless Chromium: a page served
 * from another origin (so every call to the server is a CORS request) loads the SDK's own
 * prebuilt browser bundle from node_modules and sends events to the in-process server.
 * Nothing may be fetched from outside localhost: any such request is aborted and recorded,
 * and the tests require that there were none.
 */

const CHROMIUM = '/usr/bin/chromium';
const CHROMIUM_ARGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
];
const skipReason = existsSync(CHROMIUM)
  ? undefined
  : `${CHROMIUM} is not installed, so there is no browser to run the SDKs in`;

const requireFrom = createRequire(import.meta.url);
const segmentDir = dirname(requireFrom.resolve('@segment/analytics-next/package.json'));
const segmentVersion = (
  JSON.parse(readFileSync(join(segmentDir, 'package.json'), 'utf8')) as { version: string }
).version;
/** analytics-next's UMD build: `window.AnalyticsNext.AnalyticsBrowser`. */
const SEGMENT_BUNDLE = join(segmentDir, 'dist/umd/index.js');
/**
 * RudderStack v3's "bundled" UMD build (`window.rudderanalytics.RudderAnalytics`), which
 * carries its plugins (XhrQueue...) in the bundle. The default build would fetch them from
 * https://cdn.rudderlabs.com/<version>/modern/plugins/rsa-plugins.js, which the npm package
 * does not ship.
 */
const RUDDERSTACK_BUNDLE = join(
  dirname(requireFrom.resolve('@rudderstack/analytics-js/bundled')),
  '../umd/index.js',
);

/** Rejects when `promise` takes longer than `ms`. */
async function within<T>(
  ms: number,
  what: string,
  promise: Promise<T>,
  detail: () => string = () => '',
): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms: ${what}${detail()}`)), ms);
  });
  try {
    return await Promise.race([promise, timeout]);
  } catch (err) {
    if (err instanceof Error && !err.message.startsWith('timed out')) err.message += detail();
    throw err;
  } finally {
    clearTimeout(timer);
  }
}

/** Polls `check` until it returns true, for at most `ms`. */
async function waitUntil(
  ms: number,
  what: string,
  check: () => boolean | Promise<boolean>,
  detail: () => string = () => '',
): Promise<void> {
  const deadline = Date.now() + ms;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out after ${ms} ms waiting for ${what}${detail()}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** Serves the test pages and the SDK bundles from a second origin. */
async function startStaticServer(files: Record<string, { type: string; body: string }>) {
  const server: Server = createServer((req, res) => {
    const file = files[(req.url ?? '/').split('?')[0]!];
    if (!file || (req.method !== 'GET' && req.method !== 'HEAD')) {
      res.writeHead(404, { 'content-type': 'text/plain' }).end('not found');
      return;
    }
    res.writeHead(200, { 'content-type': file.type, 'cache-control': 'no-store' }).end(file.body);
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', resolve);
  });
  const origin = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  return {
    origin,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

const page = (title: string, script: string) => ({
  type: 'text/html; charset=utf-8',
  body: `<!doctype html><html><head><meta charset="utf-8"><title>${title}</title><script src="${script}"></script></head><body><h1>${title}</h1></body></html>`,
});

interface Exchange {
  url: string;
  method: string;
  status: number;
  headers: Record<string, string>;
  requestHeaders: Record<string, string>;
  body: string | null;
}

describe.skipIf(skipReason !== undefined)(
  skipReason ? `browser SDKs (skipped: ${skipReason})` : 'browser SDKs in headless Chromium',
  () => {
    let server: TestServer;
    let statics: Awaited<ReturnType<typeof startStaticServer>> | undefined;
    let browser: Browser | undefined;

    beforeAll(async () => {
      server = await startTestServer();
      statics = await startStaticServer({
        '/sdk/analytics-next.js': { type: 'text/javascript', body: readFileSync(SEGMENT_BUNDLE, 'utf8') },
        '/sdk/rudderstack.js': { type: 'text/javascript', body: readFileSync(RUDDERSTACK_BUNDLE, 'utf8') },
        '/segment.html': page('Segment page', '/sdk/analytics-next.js'),
        '/rudderstack.html': page('RudderStack page', '/sdk/rudderstack.js'),
      });
      browser = await chromium.launch({ executablePath: CHROMIUM, args: CHROMIUM_ARGS, timeout: 15_000 });
    });

    afterAll(async () => {
      // Each one is closed even when closing another fails.
      const closed = await Promise.allSettled([browser?.close(), statics?.close(), server?.stop()]);
      for (const c of closed) if (c.status === 'rejected') throw c.reason;
    });

    /**
     * A fresh browser context (no cookies or storage) whose requests outside the two local
     * origins are aborted and recorded, and whose exchanges with Tributary are recorded.
     */
    async function openPage(path: string) {
      const context: BrowserContext = await browser!.newContext();
      context.setDefaultTimeout(10_000);
      const external: string[] = [];
      const local = [statics!.origin, server.url];
      await context.route(
        (url) => !local.some((o) => url.origin === o),
        (route) => {
          external.push(route.request().url());
          return route.abort('blockedbyclient');
        },
      );
      const p: Page = await context.newPage();
      const errors: string[] = [];
      const consoleErrors: string[] = [];
      p.on('pageerror', (err) => errors.push(String(err)));
      p.on('console', (msg) => {
        if (msg.type() === 'error' || msg.type() === 'warning') consoleErrors.push(msg.text());
      });
      const exchanges: Exchange[] = [];
      p.on('response', async (res) => {
        const req: Request = res.request();
        if (!req.url().startsWith(server.url)) return;
        exchanges.push({
          url: req.url(),
          method: req.method(),
          status: res.status(),
          headers: await res.allHeaders(),
          requestHeaders: await req.allHeaders(),
          body: req.postData(),
        });
      });
      await p.goto(`${statics!.origin}${path}`, { waitUntil: 'load' });
      /** What the page did, for failure messages. */
      const detail = () =>
        `\nexchanges: ${JSON.stringify(exchanges.map((e) => `${e.method} ${e.url} ${e.status}`))}` +
        `\nblocked external requests: ${JSON.stringify(external)}` +
        `\npage errors: ${JSON.stringify(errors)}\nconsole: ${JSON.stringify(consoleErrors)}`;
      return { context, page: p, external, errors, exchanges, detail };
    }

    const rowsFor = (ids: readonly string[]) => storedRows(server, ids);

    /** Waits until the warehouse holds at least `ids.length` rows for those ids. */
    async function settledRows(ids: readonly string[]): Promise<StoredRow[]> {
      await waitUntil(10_000, `${ids.length} events in the warehouse`, async () => {
        await server.settle();
        const [row] = await server.query(
          `SELECT count(*) AS c FROM events WHERE message_id IN (${sqlList(ids)})`,
        );
        return Number(row?.c) >= ids.length;
      });
      return rowsFor(ids);
    }

    it('@segment/analytics-next (UMD build) loads its settings from the server and delivers all six call types', async () => {
      const { context, page: p, external, errors, exchanges, detail } = await openPage('/segment.html');
      try {
        const script = `(async () => {
          const { AnalyticsBrowser } = window.AnalyticsNext;
          const [analytics] = await AnalyticsBrowser.load({
            writeKey: ${JSON.stringify(WRITE_KEY)},
            cdnURL: ${JSON.stringify(server.url)},
          });
          const sent = [];
          const record = (ctx) => sent.push({
            messageId: ctx.event.messageId,
            type: ctx.event.type,
            failed: ctx.failedDelivery() ? String(ctx.failedDelivery().reason) : null,
            delivered: ctx.logs().some((l) => l.message === 'Delivered'),
          });
          record(await analytics.identify('user-b1', { email: 'b1@example.com', plan: 'pro' }));
          record(await analytics.track('Order Completed', { total: 42.5, currency: 'EUR' }));
          record(await analytics.page('Docs', 'Getting Started', { section: 'intro' }));
          record(await analytics.group('acme', { name: 'Acme Inc' }));
          record(await analytics.alias('user-b1', 'anon-b0'));
          record(await analytics.screen('Home', { variant: 'b' }));
          return { sent, anonymousId: analytics.user().anonymousId() };
        })()`;
        const result = (await within(
          15_000,
          'analytics-next load and calls',
          p.evaluate(script),
          detail,
        )) as {
          sent: { messageId: string; type: string; failed: string | null; delivered: boolean }[];
          anonymousId: string;
        };

        // The response handlers run asynchronously: wait until all six answers are recorded.
        await waitUntil(
          5_000,
          'six event requests answered',
          () => exchanges.filter((e) => e.method === 'POST').length >= 6,
          detail,
        );
        expect(errors).toEqual([]);
        expect(result.sent.map((s) => s.type)).toEqual([
          'identify',
          'track',
          'page',
          'group',
          'alias',
          'screen',
        ]);
        for (const s of result.sent) expect(s).toMatchObject({ failed: null, delivered: true });
        const ids = result.sent.map((s) => s.messageId);
        expect(new Set(ids).size).toBe(6);

        // The settings came from Tributary and the events went back to it (short routes).
        const settings = exchanges.find((e) =>
          e.url.startsWith(`${server.url}/v1/projects/${WRITE_KEY}/settings`),
        );
        expect(settings?.status).toBe(200);
        const posts = exchanges.filter((e) => e.method === 'POST');
        expect(posts.map((e) => new URL(e.url).pathname).sort()).toEqual(
          ['/v1/a', '/v1/g', '/v1/i', '/v1/p', '/v1/s', '/v1/t'].sort(),
        );
        for (const e of posts) expect(e.status).toBe(200);
        // Cross-origin: the server echoed the page's origin on the settings and on every event.
        for (const e of [settings!, ...posts]) {
          expect(e.headers['access-control-allow-origin']).toBe(statics!.origin);
          expect(e.headers['vary']).toMatch(/origin/i);
        }

        const rows = await settledRows(ids);
        expect(rows).toHaveLength(6);
        const byType = new Map(rows.map((r) => [r.type, r]));
        for (const r of rows) {
          expect(r.source_id).toBe('web');
          expect(r.anonymous_id).toBe(result.anonymousId);
          expect(r.library).toBe('analytics.js');
          expect(r.library_version).toBe(`next-${segmentVersion}`);
        }
        expect(byType.get('identify')).toMatchObject({ user_id: 'user-b1', event: null });
        expect(byType.get('track')).toMatchObject({ user_id: 'user-b1', event: 'Order Completed' });
        expect(byType.get('page')).toMatchObject({ user_id: 'user-b1', event: 'Getting Started' });
        expect(byType.get('group')).toMatchObject({ user_id: 'user-b1', event: null });
        expect(byType.get('alias')).toMatchObject({ user_id: 'user-b1', event: null });
        expect(byType.get('screen')).toMatchObject({ user_id: 'user-b1', event: 'Home' });

        const extra = await server.query(
          `SELECT type,
                  json_extract(payload, '$.properties.total')::DOUBLE AS total,
                  json_extract_string(payload, '$.traits.email') AS email,
                  json_extract_string(payload, '$.category') AS category,
                  json_extract_string(payload, '$.groupId') AS group_id,
                  json_extract_string(payload, '$.previousId') AS previous_id,
                  json_extract_string(payload, '$.context.page.url') AS page_url
           FROM events WHERE message_id IN (${sqlList(ids)})`,
        );
        const extraByType = new Map(extra.map((r) => [r.type, r]));
        expect(extraByType.get('track')?.total).toBe(42.5);
        expect(extraByType.get('identify')?.email).toBe('b1@example.com');
        expect(extraByType.get('page')?.category).toBe('Docs');
        expect(extraByType.get('group')?.group_id).toBe('acme');
        expect(extraByType.get('alias')?.previous_id).toBe('anon-b0');
        for (const r of extra) expect(r.page_url).toBe(`${statics!.origin}/segment.html`);

        // Settings with only Segment.io and metrics sampleRate 0: no CDN, no metrics, no plugins.
        expect(external).toEqual([]);
      } finally {
        await context.close();
      }
    });

    it('@rudderstack/analytics-js v3 (bundled UMD build) loads its source config from the server and delivers track, identify and page', async () => {
      const { context, page: p, external, errors, exchanges, detail } = await openPage('/rudderstack.html');
      try {
        const script = `(async () => {
          const rudderanalytics = new window.rudderanalytics.RudderAnalytics();
          await new Promise((resolve, reject) => {
            const timer = setTimeout(() => reject(new Error('onLoaded was not called')), 10000);
            rudderanalytics.load(${JSON.stringify(WRITE_KEY)}, ${JSON.stringify(server.url)}, {
              configUrl: ${JSON.stringify(server.url)},
              // The plugins the bundle carries, named so nothing else is looked for.
              plugins: ['XhrQueue', 'StorageEncryption', 'StorageMigrator'],
              // Anything that would still be fetched from a CDN goes to the page's origin (404).
              pluginsSDKBaseURL: ${JSON.stringify(`${statics!.origin}/no-plugins`)},
              destSDKBaseURL: ${JSON.stringify(`${statics!.origin}/no-destinations`)},
              loadIntegration: false,
              polyfillIfRequired: false,
              useBeacon: false,
              logLevel: 'ERROR',
              onLoaded: () => { clearTimeout(timer); resolve(); },
            });
          });
          rudderanalytics.track('Order Completed', { total: 42.5 });
          rudderanalytics.identify('user-r1', { email: 'r1@example.com' });
          rudderanalytics.page('Docs', 'Getting Started', { section: 'intro' });
          return { anonymousId: rudderanalytics.getAnonymousId() };
        })()`;
        const result = (await within(15_000, 'RudderStack load and calls', p.evaluate(script), detail)) as {
          anonymousId: string;
        };

        // The calls return before delivery: wait for the server's answers to the three events.
        const eventPosts = () => exchanges.filter((e) => e.method === 'POST');
        await waitUntil(10_000, 'three event requests answered', () => eventPosts().length >= 3, detail);
        expect(errors).toEqual([]);

        const config = exchanges.find((e) => e.url.startsWith(`${server.url}/sourceConfig/`));
        expect(config?.status).toBe(200);
        expect(new URL(config!.url).searchParams.get('writeKey')).toBe(WRITE_KEY);
        const posts = eventPosts();
        expect(posts.map((e) => new URL(e.url).pathname).sort()).toEqual([
          '/v1/identify',
          '/v1/page',
          '/v1/track',
        ]);
        for (const e of posts) {
          expect(e.status).toBe(200);
          expect(e.headers['access-control-allow-origin']).toBe(statics!.origin);
          // XHRs with Basic auth and a JSON body: the browser had to get a preflight through.
          expect(e.requestHeaders['authorization']).toBe(`Basic ${btoa(`${WRITE_KEY}:`)}`);
          expect(e.requestHeaders['content-type']).toMatch(/^application\/json/);
        }
        expect(config!.headers['access-control-allow-origin']).toBe(statics!.origin);

        const sent = posts.map((e) => JSON.parse(e.body ?? '{}') as { messageId: string; type: string });
        const ids = sent.map((s) => s.messageId);
        expect(new Set(ids).size).toBe(3);

        const rows = await settledRows(ids);
        expect(rows).toHaveLength(3);
        const byType = new Map(rows.map((r) => [r.type, r]));
        for (const r of rows) {
          expect(r.source_id).toBe('web');
          expect(r.anonymous_id).toBe(result.anonymousId);
          expect(r.library).toBe('RudderLabs JavaScript SDK');
        }
        expect(byType.get('track')).toMatchObject({ user_id: null, event: 'Order Completed' });
        expect(byType.get('identify')).toMatchObject({ user_id: 'user-r1', event: null });
        expect(byType.get('page')).toMatchObject({ user_id: 'user-r1', event: 'Getting Started' });

        expect(external).toEqual([]);
      } finally {
        await context.close();
      }
    });
  },
);
