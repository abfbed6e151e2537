import { isIP } from 'node:net';

/** What `loopback`, `linklocal` and `uniquelocal` stand for in `server.trustProxy` (the names proxy-addr knows). */
export const PROXY_PRESETS: Readonly<Record<string, readonly string[]>> = {
  loopback: ['127.0.0.1/8', '::1/128'],
  linklocal: ['169.254.0.0/16', 'fe80::/10'],
  uniquelocal: ['10.0.0.0/8', '172.16.0.0/12', '192.168.0.0/16', 'fc00::/7'],
};

/** Whether a `server.trustProxy` entry is an IP address, a CIDR, or a preset name. */
export function isProxyEntry(entry: string): boolean {
  if (PROXY_PRESETS[entry]) return true;
  const [addr, prefix, extra] = entry.split('/');
  const family = isIP(addr ?? '');
  if (family === 0 || extra !== undefined) return false;
  if (prefix === undefined) return true;
  if (!/^\d{1,3}$/.test(prefix)) return false;
  return Number(prefix) <= (family === 4 ? 32 : 128);
}
