import { describe, expect, it } from 'vitest';
import { expandProxies, nodeServerOptions, proxyMatcher } from './http-limits.js';

describe('trusted proxies', () => {
  it('matches addresses, CIDRs, presets and IPv4-mapped IPv6 forms', () => {
    const trusted = proxyMatcher(['10.0.0.0/8', '192.0.2.1', '2001:db8::/32', 'loopback']);
    for (const a of ['10.1.2.3', '::ffff:10.1.2.3', '192.0.2.1', '2001:db8::5', '127.0.0.1', '::1'])
      expect(trusted(a), a).toBe(true);
    for (const a of ['11.0.0.1', '192.0.2.2', '2001:db9::1', 'not an address', ''])
      expect(trusted(a), a).toBe(false);
  });

  it('expands preset names to their ranges', () => {
    expect(expandProxies(['uniquelocal', '198.51.100.7'])).toEqual([
      '10.0.0.0/8',
      '172.16.0.0/12',
      '192.168.0.0/16',
      'fc00::/7',
      '198.51.100.7',
    ]);
  });
});

describe('nodeServerOptions', () => {
  const limits = {
    requestTimeout: 30_000,
    headersTimeout: 10_000,
    keepAliveTimeout: 72_000,
    connectionTimeout: 300_000,
    maxConnectionsPerClient: 128,
    trustProxy: false as const,
  };
  it('checks for expired requests every quarter of the shortest timeout, within 10 ms and 30 s', () => {
    expect(nodeServerOptions(limits)).toEqual({ headersTimeout: 10_000, connectionsCheckingInterval: 2_500 });
    expect(
      nodeServerOptions({ ...limits, headersTimeout: 20, requestTimeout: 20 }).connectionsCheckingInterval,
    ).toBe(10);
    expect(
      nodeServerOptions({ ...limits, headersTimeout: 0, requestTimeout: 0 }).connectionsCheckingInterval,
    ).toBe(30_000);
  });
});
