import type { Server, ServerOptions } from 'node:http';
import type { Socket } from 'node:net';
import { BlockList, isIP } from 'node:net';
import { PROXY_PRESETS } from '../config/trust-proxy.js';

/** The HTTP server's limits, as `server:` in the configuration gives them (milliseconds). */
export interface HttpLimits {
  /** Longest a request may take to arrive, headers and body (Node's `requestTimeout`). */
  requestTimeout: number;
  /** Longest the headers of a request may take to arrive (Node's `headersTimeout`). */
  headersTimeout: number;
  /** How long an idle keep-alive connection is kept between requests. */
  keepAliveTimeout: number;
  /** How long a connection may stay without any traffic before it is closed. */
  connectionTimeout: number;
  /** Most open connections from one client address; 0: no cap. Trusted proxies are not capped. */
  maxConnectionsPerClient: number;
  /** Addresses and CIDRs of proxies whose `X-Forwarded-*` headers are believed; false: none. */
  trustProxy: false | readonly string[];
}

/** The entries with presets expanded to their CIDRs. */
export function expandProxies(entries: readonly string[]): string[] {
  return entries.flatMap((e) => PROXY_PRESETS[e] ?? [e]);
}

/** A test for "is this socket address a trusted proxy" (IPv4-mapped IPv6 addresses included). */
export function proxyMatcher(entries: readonly string[]): (address: string) => boolean {
  const list = new BlockList();
  for (const e of expandProxies(entries)) {
    const [addr, prefix] = e.split('/') as [string, string | undefined];
    const type = isIP(addr) === 6 ? 'ipv6' : 'ipv4';
    if (prefix === undefined) list.addAddress(addr, type);
    else list.addSubnet(addr, Number(prefix), type);
  }
  return (address) => {
    const family = isIP(address);
    return family !== 0 && list.check(address, family === 6 ? 'ipv6' : 'ipv4');
  };
}

/**
 * Options for `http.createServer` that Fastify does not set itself: the headers timeout, and
 * how often Node looks for requests past their timeouts (every 30 s by default, so a 1 s
 * timeout would otherwise act after up to 30 s): a quarter of the shortest timeout, 10 ms to 30 s.
 */
export function nodeServerOptions(limits: HttpLimits): ServerOptions {
  const shortest = Math.min(limits.headersTimeout || Infinity, limits.requestTimeout || Infinity);
  const interval = Number.isFinite(shortest)
    ? Math.min(30_000, Math.max(10, Math.floor(shortest / 4)))
    : 30_000;
  return { headersTimeout: limits.headersTimeout, connectionsCheckingInterval: interval };
}

/**
 * Caps the open connections of each client address: a connection past the cap is destroyed
 * as soon as it is accepted, before a byte of it is read, so one address cannot hold every
 * descriptor or the memory of many half-sent bodies. Connections from `exempt` addresses
 * (trusted proxies, which carry many clients) are not counted.
 */
export function capConnectionsPerClient(
  server: Server,
  max: number,
  exempt: (address: string) => boolean = () => false,
  onRefused: (address: string) => void = () => {},
): void {
  if (max <= 0) return;
  const open = new Map<string, number>();
  server.on('connection', (socket: Socket) => {
    const address = socket.remoteAddress;
    if (address === undefined || exempt(address)) return;
    const n = open.get(address) ?? 0;
    if (n >= max) {
      onRefused(address);
      socket.destroy();
      return;
    }
    open.set(address, n + 1);
    socket.once('close', () => {
      const left = (open.get(address) ?? 1) - 1;
      if (left <= 0) open.delete(address);
      else open.set(address, left);
    });
  });
}
