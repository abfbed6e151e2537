import { describe, expect, it } from 'vitest';
import { ServerConfig } from './schema.js';

describe('server: limits', () => {
  it('takes proxies as addresses, CIDRs and preset names', () => {
    const cfg = ServerConfig.parse({ trustProxy: ['10.0.0.0/8', '192.0.2.1', '2001:db8::/32', 'loopback'] });
    expect(cfg.trustProxy).toEqual(['10.0.0.0/8', '192.0.2.1', '2001:db8::/32', 'loopback']);
  });

  it.each([
    [{ trustProxy: true }],
    [{ trustProxy: ['*'] }],
    [{ trustProxy: ['10.0.0.0/33'] }],
    [{ trustProxy: ['example.com'] }],
    [{ trustProxy: [] }],
    [{ requestTimeout: '1s', headersTimeout: '2s' }],
    [{ maxConnectionsPerClient: -1 }],
  ])('refuses %j', (server) => {
    expect(ServerConfig.safeParse(server).success).toBe(false);
  });
});
