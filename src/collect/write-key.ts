/**
 * Where a write key may come from, in the order they are tried: HTTP Basic auth (the key
 * as user name; one trailing `:` is stripped, the key is never split at its first `:`,
 * since Jitsu keys hold one), the `X-Write-Key` header, `?writeKey=`, the body's `writeKey`.
 */
export function extractWriteKey(
  headers: Record<string, string | string[] | undefined>,
  query: unknown,
  body: unknown,
): string | undefined {
  const auth = header(headers, 'authorization');
  if (auth !== undefined) {
    const match = /^basic\s+(\S+)\s*$/i.exec(auth);
    if (match?.[1]) {
      let decoded = Buffer.from(match[1], 'base64').toString('utf8');
      if (decoded.endsWith(':')) decoded = decoded.slice(0, -1);
      if (decoded !== '') return decoded;
    }
  }
  const fromHeader = header(headers, 'x-write-key');
  if (fromHeader) return fromHeader;
  const fromQuery = (query as Record<string, unknown> | undefined)?.writeKey;
  if (typeof fromQuery === 'string' && fromQuery !== '') return fromQuery;
  if (typeof body === 'object' && body !== null && !Array.isArray(body)) {
    const fromBody = (body as Record<string, unknown>).writeKey;
    if (typeof fromBody === 'string' && fromBody !== '') return fromBody;
  }
  return undefined;
}

function header(headers: Record<string, string | string[] | undefined>, name: string): string | undefined {
  const value = headers[name];
  return Array.isArray(value) ? value[0] : value;
}
