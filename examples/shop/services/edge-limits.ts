/**
 * The gateway's limits: how long it waits for a client and for the services behind it, and how many
 * requests one client may make. Read once from the environment at start-up, then frozen; a bad value
 * refuses to start with what to write instead.
 *
 *   GATEWAY_UPSTREAM_TIMEOUT_MS    5000   the outbound calls made for one request (sign-in, token exchange,
 *                                         orders, inventory) end within this, or the user gets a 503
 *   GATEWAY_HEADERS_TIMEOUT_MS    10000   a client has this long for the TLS handshake and for the headers
 *   GATEWAY_REQUEST_TIMEOUT_MS    15000   ... and this long for the whole request, body included
 *   GATEWAY_KEEP_ALIVE_TIMEOUT_MS  5000   an idle keep-alive connection is closed after this
 *   GATEWAY_RATE_ANONYMOUS          300   requests a minute from one client address without a session
 *   GATEWAY_RATE_SIGN_IN             20   /login, and /callback, a minute from one client address
 *   GATEWAY_RATE_SESSION            300   requests a minute in one signed-in session, wherever they come from
 *   GATEWAY_RATE_KEYS            100000   clients (addresses, sessions) each budget tracks, least recently seen
 *                                         dropped first (~300 bytes each): an attacker must use more addresses than
 *                                         this within a minute to push its own counters out
 *   GATEWAY_SESSIONS_PER_USER        10   signed-in sessions of one user; one more ends the least recently used
 *   GATEWAY_SESSIONS_MAX          20000   signed-in sessions in all (~2 KB each); one more ends the least recently used
 *   GATEWAY_TRUSTED_PROXIES      (none)   reverse proxies (addresses, CIDRs, `loopback`) whose
 *                                         X-Forwarded-For names the client; nobody else's is read
 */
import { isIP } from 'node:net';

export interface EdgeLimits {
  readonly upstreamTimeoutMs: number;
  readonly headersTimeoutMs: number;
  readonly requestTimeoutMs: number;
  readonly keepAliveTimeoutMs: number;
  readonly anonymousPerMinute: number;
  readonly signInPerMinute: number;
  readonly sessionPerMinute: number;
  readonly rateKeys: number;
  readonly sessionsPerUser: number;
  readonly sessionsMax: number;
  /** For Fastify's `trustProxy`: false unless proxies are named. */
  readonly trustedProxies: readonly string[] | false;
}

type Environment = Readonly<Record<string, string | undefined>>;

function whole(env: Environment, name: string, fallback: number, min: number, max: number): number {
  const text = env[name];
  if (text === undefined || text === '') return fallback;
  const value = Number(text);
  if (!Number.isInteger(value) || value < min || value > max) {
    throw new Error(
      `${name} must be a whole number from ${min} to ${max}, e.g. ${name}=${fallback}; ` +
        `got ${JSON.stringify(text)}`,
    );
  }
  return value;
}

// proxy-addr's names for address ranges, besides addresses and CIDRs.
const RANGE_NAMES = new Set(['loopback', 'linklocal', 'uniquelocal']);

function proxies(env: Environment): readonly string[] | false {
  const text = env.GATEWAY_TRUSTED_PROXIES?.trim();
  if (text === undefined || text === '') return false;
  const entries = text.split(',').map((entry) => entry.trim());
  for (const entry of entries) {
    const [address = '', bits, ...rest] = entry.split('/');
    const family = isIP(address);
    const prefixOk = bits === undefined || (/^\d{1,3}$/.test(bits) && Number(bits) <= (family === 6 ? 128 : 32));
    if (!(RANGE_NAMES.has(entry) || (family !== 0 && prefixOk && rest.length === 0))) {
      throw new Error(
        `GATEWAY_TRUSTED_PROXIES: ${JSON.stringify(entry)} is not an address, a CIDR or one of ` +
          `${[...RANGE_NAMES].join(', ')}; write e.g. GATEWAY_TRUSTED_PROXIES=10.0.0.5,10.1.0.0/16 ` +
          '(the proxies in front of the gateway, and only those)',
      );
    }
  }
  return Object.freeze(entries);
}

export function edgeLimits(env: Environment = process.env): EdgeLimits {
  const headersTimeoutMs = whole(env, 'GATEWAY_HEADERS_TIMEOUT_MS', 10_000, 1_000, 120_000);
  const requestTimeoutMs = whole(env, 'GATEWAY_REQUEST_TIMEOUT_MS', 15_000, 1_000, 300_000);
  // Node refuses a header timeout longer than the request timeout; say so in our words.
  if (headersTimeoutMs > requestTimeoutMs) {
    throw new Error(
      `GATEWAY_HEADERS_TIMEOUT_MS (${headersTimeoutMs}) must not exceed GATEWAY_REQUEST_TIMEOUT_MS ` +
        `(${requestTimeoutMs}): the headers are part of the request; raise the second or lower the first`,
    );
  }
  return Object.freeze({
    upstreamTimeoutMs: whole(env, 'GATEWAY_UPSTREAM_TIMEOUT_MS', 5_000, 100, 60_000),
    headersTimeoutMs,
    requestTimeoutMs,
    keepAliveTimeoutMs: whole(env, 'GATEWAY_KEEP_ALIVE_TIMEOUT_MS', 5_000, 1_000, 120_000),
    anonymousPerMinute: whole(env, 'GATEWAY_RATE_ANONYMOUS', 300, 1, 1_000_000),
    signInPerMinute: whole(env, 'GATEWAY_RATE_SIGN_IN', 20, 1, 1_000_000),
    sessionPerMinute: whole(env, 'GATEWAY_RATE_SESSION', 300, 1, 1_000_000),
    rateKeys: whole(env, 'GATEWAY_RATE_KEYS', 100_000, 1_000, 10_000_000),
    sessionsPerUser: whole(env, 'GATEWAY_SESSIONS_PER_USER', 10, 1, 1_000),
    sessionsMax: whole(env, 'GATEWAY_SESSIONS_MAX', 20_000, 100, 10_000_000),
    trustedProxies: proxies(env),
  });
}
