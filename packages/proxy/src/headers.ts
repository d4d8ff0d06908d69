/**
 * What crosses the sidecar in headers. Inbound, the upstream must be able to trust every
 * `x-lockstep-*` header it sees, so each one the client sent is dropped and the sidecar sets them
 * from the admission the guard made (who called, on whose behalf). Hop-by-hop headers (RFC 9110
 * §7.6.1) belong to one connection and never cross.
 *
 * A header whose name contains `_` never crosses either: servers that map `-` and `_` alike (CGI's
 * `HTTP_*` variables, gunicorn, Puma, PHP) would read `X-Lockstep_Roles` or `Txn_Token` as the identity
 * header the sidecar sets, and which of the two wins is theirs to decide. nginx drops them by default
 * (`underscores_in_headers off`) for the same reason.
 */
import type { IncomingHttpHeaders } from 'node:http';
import type { Admission } from '@lockstep/guard';

export const IDENTITY_PREFIX = 'x-lockstep-';
export const TXN_TOKEN_HEADER = 'txn-token';

/** See above: `_` in a name could alias an identity header on the upstream or the server. */
function aliasable(name: string): boolean {
  return name.includes('_');
}

const HOP_BY_HOP: ReadonlySet<string> = new Set([
  'connection',
  'keep-alive',
  'proxy-authenticate',
  'proxy-authorization',
  'proxy-connection',
  'te',
  'trailer',
  'transfer-encoding',
  'upgrade',
]);

/**
 * Hop-by-hop: the fixed list and whatever the message's `Connection` header names. When it names
 * nothing more (none, or `keep-alive`: most messages) that is the fixed list itself, built once.
 */
function hopByHop(connection: string | string[] | undefined): ReadonlySet<string> {
  if (connection === undefined || connection.length === 0) return HOP_BY_HOP;
  const values = typeof connection === 'string' ? [connection] : connection;
  let dropped: Set<string> | null = null;
  for (const value of values)
    for (const part of value.split(',')) {
      const name = part.trim().toLowerCase();
      if (name !== '' && !HOP_BY_HOP.has(name)) (dropped ??= new Set(HOP_BY_HOP)).add(name);
    }
  return dropped ?? HOP_BY_HOP;
}

/**
 * Headers by which Envoy, nginx and Traefik vouch for a client's certificate. An app that trusted them
 * behind such a proxy would take a client's word for its identity behind the sidecar: the sidecar
 * drops them; its own word is `x-lockstep-caller`.
 */
const CLIENT_CERTIFICATE_HEADERS = [
  'x-forwarded-client-cert',
  'x-client-cert',
  'x-forwarded-tls-client-cert',
  'ssl-client-cert',
];

/**
 * Where the request came from, in the words of a proxy. The client's own are dropped (an app that logs or
 * rate-limits by `X-Forwarded-For` would take a client's word for its address); the sidecar says what it
 * saw: the connection's address, and https.
 */
const FORWARDING_HEADERS = [
  'forwarded',
  'x-forwarded-for',
  'x-forwarded-host',
  'x-forwarded-port',
  'x-forwarded-proto',
  'x-forwarded-prefix',
  'x-real-ip',
];

/** The client's headers that never reach the upstream, whatever they say: see upstreamHeaders. */
const NEVER_UPSTREAM: ReadonlySet<string> = new Set([
  ...HOP_BY_HOP,
  'host',
  'content-length',
  'expect',
  TXN_TOKEN_HEADER,
  ...CLIENT_CERTIFICATE_HEADERS,
  ...FORWARDING_HEADERS,
]);

/**
 * The headers the upstream receives, as a flat `[name, value, …]` list (repeated headers kept):
 * the client's, less hop-by-hop, `host`, the body's framing and description (the sidecar sends the
 * checked body itself, as `content-type: application/json` without `content-encoding`), `expect`, every
 * `x-lockstep-*`, `txn-token`, client-certificate and forwarding headers of other proxies and every name
 * with `_`; then the verified identity, and `x-forwarded-for` (the connection's address, when known) and
 * `x-forwarded-proto: https`.
 */
export function upstreamHeaders(
  rawHeaders: readonly string[],
  admission: Admission,
  hasBody: boolean,
  remoteAddress?: string,
): string[] {
  const headers: string[] = [];
  // The names the client's Connection header lists; none (the usual case) costs no set of its own.
  const connection = collect(rawHeaders, 'connection');
  const named = connection.length === 0 ? null : hopByHop(connection);
  for (let i = 0; i + 1 < rawHeaders.length; i += 2) {
    const name = (rawHeaders[i] as string).toLowerCase();
    if (NEVER_UPSTREAM.has(name) || named?.has(name) === true) continue;
    if (name.startsWith(IDENTITY_PREFIX) || aliasable(name)) continue;
    // The body is the checked value re-serialized: UTF-8 JSON, not encoded, whatever the client said.
    if (name === 'content-type' || name === 'content-encoding') continue;
    headers.push(name, rawHeaders[i + 1] as string);
  }
  if (hasBody) headers.push('content-type', 'application/json');
  pushIdentity(headers, admission);
  if (remoteAddress !== undefined) headers.push('x-forwarded-for', remoteAddress);
  headers.push('x-forwarded-proto', 'https');
  return headers;
}

/**
 * The verified context, appended to a flat `[name, value, …]` list (no record per request on the
 * sidecar's path): the caller's SPIFFE ID, the Txn-Token's `sub`, `txn` and roles, and the request id of
 * the audit event. Only what the guard verified; a public route has no caller and no token. The
 * Txn-Token itself is passed on as verified, for the app to forward on its outbound calls.
 */
function pushIdentity(headers: string[], admission: Admission): void {
  headers.push(`${IDENTITY_PREFIX}request-id`, admission.requestId);
  if (admission.peer !== null) headers.push(`${IDENTITY_PREFIX}caller`, admission.peer.spiffeId);
  const txn = admission.txn;
  if (txn !== null) {
    headers.push(
      `${IDENTITY_PREFIX}sub`,
      headerSafe(txn.claims.sub),
      `${IDENTITY_PREFIX}txn`,
      headerSafe(txn.claims.txn),
    );
    headers.push(`${IDENTITY_PREFIX}roles`, txn.roles.map(headerSafe).join(','), TXN_TOKEN_HEADER, txn.token);
  }
}

/**
 * A claim as a header value: percent-encoded outside printable ASCII and for `%` and `,` (so that a
 * role cannot split into two); a plain value (`alice`, `customer`, a SPIFFE ID) is unchanged.
 */
export function headerSafe(value: string): string {
  return value.replace(/[^\x21-\x7e]|[%,]/gu, (char) =>
    [...Buffer.from(char, 'utf8')].map((byte) => `%${byte.toString(16).toUpperCase().padStart(2, '0')}`).join(''),
  );
}

/** The upstream's response headers for the client: less hop-by-hop ones. */
export function responseHeaders(headers: IncomingHttpHeaders): Record<string, string | string[]> {
  const dropped = hopByHop(headers.connection);
  const kept: Record<string, string | string[]> = {};
  for (const [name, value] of Object.entries(headers)) {
    if (value !== undefined && !dropped.has(name.toLowerCase())) kept[name] = value;
  }
  return kept;
}

/**
 * The app's outbound request for the server: less hop-by-hop ones, `host`, the body's framing, the
 * sidecar's own `lockstep-target`, every `x-lockstep-*` (a server's sidecar sets its own) and every
 * name with `_`.
 */
export function egressHeaders(headers: IncomingHttpHeaders, target: string): Record<string, string> {
  const dropped = new Set(hopByHop(headers.connection));
  for (const name of ['host', 'content-length', 'expect', target, TXN_TOKEN_HEADER]) dropped.add(name);
  const kept: Record<string, string> = {};
  for (const [name, value] of Object.entries(headers)) {
    if (value === undefined || dropped.has(name) || name.startsWith(IDENTITY_PREFIX) || aliasable(name)) continue;
    kept[name] = Array.isArray(value) ? value.join(', ') : value;
  }
  return kept;
}

function collect(rawHeaders: readonly string[], wanted: string): string[] {
  const values: string[] = [];
  for (let i = 0; i + 1 < rawHeaders.length; i += 2) {
    const name = rawHeaders[i] as string;
    if (name.length === wanted.length && name.toLowerCase() === wanted) values.push(rawHeaders[i + 1] as string);
  }
  return values;
}
