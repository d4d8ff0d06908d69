/**
 * gateway — the shop's edge. Serves the web page; users sign in through the control plane's OpenID
 * provider (authorization code + PKCE, openid-client; the gateway authenticates with its SVID,
 * tls_client_auth). For every API call it exchanges the user's access token for a Txn-Token and calls
 * the services over mTLS. The access token never goes inward and a Txn-Token never goes outward.
 *
 * Browser hygiene: a server-side session behind an HttpOnly, SameSite=Lax cookie (Secure under TLS),
 * bounded per user and in all (session-store.ts); a sign-in in progress kept in the browser that
 * started it, in an encrypted cookie, so that nothing a flood of GET /login makes is kept here; a CSRF token and a same-origin check on every state-changing call, a CSP without inline script,
 * frame-ancestors none, nosniff, HSTS under TLS. TLS at the edge when GATEWAY_TLS_CERT and
 * GATEWAY_TLS_KEY name a certificate; otherwise plain HTTP on 127.0.0.1 only, and it says so.
 *
 * Abuse: every route runs its checks (budget, session, CSRF) before a byte of its body is read, and
 * takes only the body it needs (413 beyond); a signed-in session has a request budget of its own,
 * apart from its address's, so that a flood of anonymous requests gets 429s without crowding out the
 * users; clients have bounded time for headers and body; every outbound call has a deadline, past which
 * the user gets a 503 with a request id. The numbers are in edge-limits.ts.
 *
 * In perimeter-only mode (the drill's "before") the edge is the same, but the services behind it are
 * called over plain HTTP with the user in a header, trusted as is.
 */
import { AsyncLocalStorage } from 'node:async_hooks';
import { randomBytes, randomUUID, timingSafeEqual } from 'node:crypto';
import { readFileSync } from 'node:fs';
import Fastify, { type FastifyInstance, type FastifyReply, type FastifyRequest } from 'fastify';
import cookie from '@fastify/cookie';
import rateLimit, { normalizeIP } from '@fastify/rate-limit';
import * as oidc from 'openid-client';
import { fetch as undiciFetch, request as plainRequest } from 'undici';
import { decodeJwt, EncryptJWT, jwtDecrypt } from 'jose';
import { publishDecision } from '@lockstep/guard';
import { TxnTokenError } from '@lockstep/workload';
import { log, onStop, ready, secure, settings } from './runtime.ts';
import { edgeLimits } from './edge-limits.ts';
import { SessionStore, type Session } from './session-store.ts';

const config = settings();
const limits = edgeLimits();
const RESOURCE = process.env.SHOP_API_RESOURCE ?? 'https://shop.test/api';
const SCOPE = 'openid offline_access orders:read orders:create';
const SESSION_IDLE_MS = 30 * 60_000;
const SESSION_MAX_MS = 8 * 3_600_000;
const LOGIN_TTL_SECONDS = 600;
const tlsCert = process.env.GATEWAY_TLS_CERT;
const tlsKey = process.env.GATEWAY_TLS_KEY;
const secureCookies = tlsCert !== undefined && tlsKey !== undefined;
const origin = process.env.SHOP_PUBLIC_URL ?? `${secureCookies ? 'https' : 'http'}://localhost:${config.port}`;

// The gateway always has an identity: the control plane's IdP knows it by its SVID (tls_client_auth).
const perimeterOnly = config.mode === 'perimeter-only';
const { guard, agent } = await secure({ ...config, mode: 'lockstep' });

// Every outbound call made for a request ends by that request's deadline (GATEWAY_UPSTREAM_TIMEOUT_MS from when
// it starts calling out). undici destroys an aborted call's connection: it is never handed to the next request.
const outboundDeadline = (): AbortSignal => AbortSignal.timeout(limits.upstreamTimeoutMs);
const noAnswer = () => `no answer within ${limits.upstreamTimeoutMs} ms (GATEWAY_UPSTREAM_TIMEOUT_MS)`;
// openid-client's calls come through mtlsFetch with a timeout signal of their own (the same bound, per call);
// the deadline of the request they are made for reaches mtlsFetch through this store.
const deadlines = new AsyncLocalStorage<AbortSignal>();
const mtlsFetch: oidc.CustomFetch = (url, options) => {
  const deadline = deadlines.getStore();
  const signal =
    deadline === undefined || options.signal === undefined
      ? (deadline ?? options.signal)
      : AbortSignal.any([options.signal, deadline]);
  const init = { ...options, signal, dispatcher: agent.controlPlane() } as Parameters<typeof undiciFetch>[1];
  return undiciFetch(url, init) as unknown as ReturnType<oidc.CustomFetch>;
};

const oidcConfig = await oidc.discovery(
  new URL(`${config.urls.controlPlane}/oidc`),
  'gateway',
  { token_endpoint_auth_method: 'tls_client_auth', id_token_signed_response_alg: 'ES256' },
  oidc.TlsClientAuth(),
  { [oidc.customFetch]: mtlsFetch, timeout: limits.upstreamTimeoutMs / 1000 },
);
oidcConfig[oidc.customFetch] = mtlsFetch;

const sessions = new SessionStore({
  perUser: limits.sessionsPerUser,
  total: limits.sessionsMax,
  idleMs: SESSION_IDLE_MS,
  maxMs: SESSION_MAX_MS,
});
setInterval(() => sessions.sweep(), 60_000).unref();

/*
 * A sign-in in progress (PKCE verifier, state, nonce) is kept by the browser that started it, in the
 * shop_login cookie: a JWE (jose; dir, A256GCM) under a key made at start. AES-GCM authenticates as it
 * encrypts — a cookie altered or made up does not decrypt — so it needs no signature besides; its
 * `exp` ends it after 10 minutes, whatever the browser keeps. The gateway keeps nothing per sign-in, so
 * a flood of GET /login has nothing here to fill or to push real users' sign-ins out of. A restart of
 * the gateway ends the sign-ins in progress (the key is gone): the user signs in again.
 */
interface LoginState {
  readonly verifier: string;
  readonly state: string;
  readonly nonce: string;
}
const loginKey = new Uint8Array(randomBytes(32));
const LOGIN_JWE = { keyManagementAlgorithms: ['dir'], contentEncryptionAlgorithms: ['A256GCM'] };

function sealLogin(login: LoginState): Promise<string> {
  return new EncryptJWT({ verifier: login.verifier, state: login.state, nonce: login.nonce })
    .setProtectedHeader({ alg: 'dir', enc: 'A256GCM' })
    .setIssuedAt()
    .setExpirationTime(`${LOGIN_TTL_SECONDS}s`)
    .encrypt(loginKey);
}

/** The sign-in the cookie holds; null when there is none, or it is expired, altered or from before a restart. */
async function openLogin(sealed: string | undefined): Promise<LoginState | null> {
  if (sealed === undefined) return null;
  try {
    const { payload } = await jwtDecrypt(sealed, loginKey, LOGIN_JWE);
    const { verifier, state, nonce } = payload;
    if (typeof verifier !== 'string' || typeof state !== 'string' || typeof nonce !== 'string') return null;
    return { verifier, state, nonce };
  } catch {
    return null;
  }
}

const cookieOptions = { httpOnly: true, sameSite: 'lax' as const, secure: secureCookies, path: '/' };

// What a client may hold open: bounded time for the TLS handshake and the headers, for the whole request,
// and for an idle keep-alive connection (Fastify's default request timeout is none). Expiry is checked every
// second; Node's default, 30 s, would let a slow client keep its connection up to that much longer.
const clientTimeouts = {
  headersTimeout: limits.headersTimeoutMs,
  requestTimeout: limits.requestTimeoutMs,
  connectionsCheckingInterval: 1_000,
};
const serverOptions = {
  logger: false,
  // X-Forwarded-For is read only from the proxies named in GATEWAY_TRUSTED_PROXIES: anyone else could name
  // any address in it, to escape a budget or to spend another address's.
  trustProxy: limits.trustedProxies === false ? false : [...limits.trustedProxies],
  requestTimeout: limits.requestTimeoutMs,
  keepAliveTimeout: limits.keepAliveTimeoutMs,
  // Each route that takes a body says how much (below); this bounds the rest, unknown paths included.
  bodyLimit: 1024,
};
const app = (secureCookies
  ? Fastify({
      ...serverOptions,
      https: {
        cert: readFileSync(tlsCert as string),
        key: readFileSync(tlsKey as string),
        minVersion: 'TLSv1.2',
        handshakeTimeout: limits.headersTimeoutMs,
        ...clientTimeouts,
      },
    })
  : Fastify({ ...serverOptions, http: clientTimeouts })) as unknown as FastifyInstance;
await app.register(cookie);
await app.register(rateLimit, { global: false });

app.addHook('onSend', async (request, reply, payload) => {
  reply.header(
    'content-security-policy',
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'",
  );
  reply.header('x-content-type-options', 'nosniff');
  reply.header('x-frame-options', 'DENY');
  reply.header('referrer-policy', 'no-referrer');
  reply.header('cross-origin-opener-policy', 'same-origin');
  if (secureCookies) reply.header('strict-transport-security', 'max-age=31536000');
  if (request.url.startsWith('/api/') || request.url.startsWith('/callback')) reply.header('cache-control', 'no-store');
  return payload;
});

/**
 * A refusal made before the request's body is read. A body the client declared is not drained: the
 * connection closes after the answer, so that a refused upload costs us its headers, not its bytes.
 */
function refuse(request: FastifyRequest, reply: FastifyReply, status: number, answer: object): FastifyReply {
  const length = request.headers['content-length'];
  const declaresBody = request.headers['transfer-encoding'] !== undefined || (length !== undefined && length !== '0');
  if (declaresBody) reply.header('connection', 'close');
  return reply.code(status).send(answer);
}

// Errors never carry a stack trace or a downstream's details: a code, a request id. What Fastify refuses in a
// request (a body too large or of a type no route takes, malformed JSON) keeps its 4xx; only our faults are 500s.
const CLIENT_ERRORS = new Map([
  [400, 'INVALID_REQUEST'],
  [413, 'BODY_TOO_LARGE'],
  [415, 'UNSUPPORTED_MEDIA_TYPE'],
]);
app.setErrorHandler((error: Error & { statusCode?: number; validation?: unknown }, request, reply) => {
  const requestId = randomUUID();
  const status = error.validation !== undefined ? 400 : (error.statusCode ?? 500);
  if (status === 413) {
    // Refused on its Content-Length, or as soon as it grew past the limit: the rest is not read.
    reply.header('connection', 'close');
    const { url, bodyLimit } = request.routeOptions;
    const message = `${url === undefined ? 'this path' : `${request.method} ${url}`} takes a body of at most ${bodyLimit} bytes`;
    return reply.code(413).send({ error: 'BODY_TOO_LARGE', message, requestId });
  }
  if (status >= 400 && status < 500) {
    return reply
      .code(status)
      .send({ error: CLIENT_ERRORS.get(status) ?? 'INVALID_REQUEST', message: error.message, requestId });
  }
  log('error', 'unexpected error', { requestId, url: request.url, error: error.message });
  return reply.code(500).send({ error: 'INTERNAL', requestId });
});

/*
 * Budgets, per minute, in memory. A request spends from its session's budget when it carries a session that
 * exists (a made-up cookie buys nothing), else from its client address's (IPv6 by /64, a prefix one host
 * usually holds whole). So a flood of anonymous requests exhausts its address's budget only — also when
 * a signed-in user shares that address (an office, a NAT) — and is answered 429 before any other check.
 * Each budget tracks at most GATEWAY_RATE_KEYS keys (100,000), least recently seen dropped first
 * (@fastify/rate-limit's LRU): many addresses cannot grow it without bound, and one client pushes its own
 * counter out only by using more addresses than that within a minute.
 */
type Budget = ReturnType<typeof app.createRateLimit>;
type Check = (request: FastifyRequest, reply: FastifyReply) => Promise<FastifyReply | undefined>;
// `cache`, the LRU's size, reaches each budget's own store (LocalStore.child) although CreateRateLimitOptions
// does not declare it; edge-abuse.test.ts shows it holds.
type BudgetOptions = NonNullable<Parameters<typeof app.createRateLimit>[0]> & { readonly cache: number };
const createBudget = (options: BudgetOptions): Budget => app.createRateLimit(options);
const addressOf = (request: FastifyRequest): string => normalizeIP(request.ip);
const clientBudget = createBudget({
  timeWindow: 60_000,
  keyGenerator: (request) => {
    const id = request.cookies.shop_session;
    return id !== undefined && sessions.has(id) ? `session:${id}` : `address:${addressOf(request)}`;
  },
  max: (_request, key) => (key.startsWith('session:') ? limits.sessionPerMinute : limits.anonymousPerMinute),
  cache: limits.rateKeys,
});
const signInBudget = (): Budget =>
  createBudget({ timeWindow: 60_000, keyGenerator: addressOf, max: limits.signInPerMinute, cache: limits.rateKeys });

function within(budget: Budget): Check {
  return async (request, reply) => {
    const spent = await budget(request);
    if (spent.isAllowed || !spent.isExceeded) return undefined;
    reply.header('retry-after', String(spent.ttlInSeconds));
    const answer = { error: 'RATE_LIMITED', retryAfterSeconds: spent.ttlInSeconds, requestId: randomUUID() };
    return refuse(request, reply, 429, answer);
  };
}
// Every request but the health check spends first, unknown paths included (global hooks run before a route's).
const spendClientBudget = within(clientBudget);
app.addHook('onRequest', async (request, reply) => {
  return request.routeOptions.url === '/health' ? undefined : spendClientBudget(request, reply);
});

function liveSession(request: FastifyRequest): Session | null {
  const id = request.cookies.shop_session;
  return id === undefined ? null : sessions.use(id);
}

const SESSION = new WeakMap<FastifyRequest, Session>();
/** The session `signedIn` found, in a handler of a route that has that check. */
function sessionOf(request: FastifyRequest): Session {
  const session = SESSION.get(request);
  if (session === undefined) {
    throw new TypeError(
      `${request.method} ${request.routeOptions.url ?? request.url} needs the signedIn check before its handler`,
    );
  }
  return session;
}

const signedIn: Check = async (request, reply) => {
  const session = liveSession(request);
  if (session === null) return refuse(request, reply, 401, { error: 'LOGIN_REQUIRED', login: '/login' });
  SESSION.set(request, session);
  return undefined;
};
// A state-changing call comes from the shop's own page: its Origin, when the browser sends one (SameSite=Lax
// already keeps the cookie off other sites' POSTs; this holds also for a browser that does not).
const sameOrigin: Check = async (request, reply) => {
  const from = request.headers.origin;
  if (from === undefined || from === origin) return undefined;
  return refuse(request, reply, 403, {
    error: 'ORIGIN_REFUSED',
    hint: `state-changing calls are taken from ${origin} only`,
  });
};
const csrfToken: Check = async (request, reply) => {
  const sent = Buffer.from(String(request.headers['x-csrf-token'] ?? ''));
  const expected = Buffer.from(sessionOf(request).csrf);
  if (sent.length === expected.length && timingSafeEqual(sent, expected)) return undefined;
  const hint = 'send the token from GET /api/session in the X-CSRF-Token header';
  return refuse(request, reply, 403, { error: 'CSRF_TOKEN_INVALID', hint });
};

// Each route's checks, in order, after the client budget; they run before the body is read (onRequest),
// so a request they refuse has none of its body read, let alone parsed.
const signingIn = () => ({ onRequest: [within(signInBudget())] });
const reads = { onRequest: [signedIn] };
const writes = (bodyLimit: number) => ({ bodyLimit, onRequest: [signedIn, sameOrigin, csrfToken] });

// The page: three fixed files, nothing else from disk.
const PUBLIC: Record<string, [string, string]> = {
  '/': ['index.html', 'text/html; charset=utf-8'],
  '/app.js': ['app.js', 'text/javascript; charset=utf-8'],
  '/app.css': ['app.css', 'text/css; charset=utf-8'],
};
for (const [path, [file, type]] of Object.entries(PUBLIC)) {
  const body = readFileSync(new URL(`../public/${file}`, import.meta.url));
  app.get(path, async (_request, reply) => reply.type(type).send(body));
}
app.get('/health', async () => ({ ok: true }));

app.get('/login', signingIn(), async (_request, reply) => {
  const login: LoginState = {
    verifier: oidc.randomPKCECodeVerifier(),
    state: oidc.randomState(),
    nonce: oidc.randomNonce(),
  };
  const url = oidc.buildAuthorizationUrl(oidcConfig, {
    redirect_uri: `${origin}/callback`,
    scope: SCOPE,
    resource: RESOURCE,
    state: login.state,
    nonce: login.nonce,
    code_challenge: await oidc.calculatePKCECodeChallenge(login.verifier),
    code_challenge_method: 'S256',
  });
  return reply
    .setCookie('shop_login', await sealLogin(login), { ...cookieOptions, maxAge: LOGIN_TTL_SECONDS })
    .redirect(url.href, 303);
});

app.get('/callback', signingIn(), async (request, reply) => {
  const login = await openLogin(request.cookies.shop_login);
  reply.clearCookie('shop_login', cookieOptions);
  if (login === null)
    return reply
      .code(400)
      .type('text/plain')
      .send('This sign-in has expired or was started in another browser. Go back to the shop and sign in again.');
  let tokens;
  const deadline = outboundDeadline();
  try {
    tokens = await deadlines.run(deadline, () =>
      oidc.authorizationCodeGrant(
        oidcConfig,
        new URL(request.url, origin),
        {
          pkceCodeVerifier: login.verifier,
          expectedState: login.state,
          expectedNonce: login.nonce,
          idTokenExpected: true,
        },
        { resource: RESOURCE },
      ),
    );
  } catch (error) {
    if (deadline.aborted) {
      const requestId = randomUUID();
      log('warn', 'sign-in: the control plane did not answer', { requestId, timeoutMs: limits.upstreamTimeoutMs });
      const page = `The sign-in service did not answer in time. Go back to the shop and sign in again in a moment (request ${requestId}).`;
      return reply.code(503).type('text/plain').send(page);
    }
    log('warn', 'sign-in failed', { error: (error as Error).message });
    return reply.code(400).type('text/plain').send('Sign-in failed. Go back to the shop and try again.');
  }
  const claims = tokens.claims();
  const now = Date.now();
  const session: Session = {
    id: randomBytes(32).toString('base64url'),
    sub: String(claims?.sub),
    csrf: randomBytes(32).toString('base64url'),
    createdAt: now,
    lastSeen: now,
    accessToken: tokens.access_token,
    refreshToken: tokens.refresh_token,
    expiresAt: now + (tokens.expiresIn() ?? 600) * 1000,
  };
  for (const ended of sessions.add(session)) {
    log('info', 'signed out a session to make room for a new one', {
      sub: ended.sub,
      sameUser: ended.sub === session.sub,
      perUser: limits.sessionsPerUser,
      max: limits.sessionsMax,
    });
  }
  log('info', 'signed in', { sub: session.sub });
  return reply
    .setCookie('shop_session', session.id, { ...cookieOptions, maxAge: SESSION_MAX_MS / 1000 })
    .redirect('/', 303);
});

class Unavailable extends Error {
  readonly code: string;
  constructor(code: string, message: string) {
    super(message);
    this.code = code;
  }
}

/**
 * A fresh access token (refreshed when it is about to expire), exchanged for a Txn-Token whose
 * `scope` (REQUIRED, draft-ietf-oauth-transaction-tokens-10 §11.1) is the purpose of this call only.
 */
async function txnTokenFor(session: Session, clientIp: string, scope: string, deadline: AbortSignal): Promise<string> {
  try {
    if (session.expiresAt - Date.now() < 30_000 && session.refreshToken !== undefined) {
      const refreshToken = session.refreshToken;
      const refreshed = await deadlines.run(deadline, () =>
        oidc.refreshTokenGrant(oidcConfig, refreshToken, { resource: RESOURCE }),
      );
      session.accessToken = refreshed.access_token;
      session.refreshToken = refreshed.refresh_token ?? session.refreshToken;
      session.expiresAt = Date.now() + (refreshed.expiresIn() ?? 600) * 1000;
    }
    return await agent.txnToken({
      subjectToken: session.accessToken,
      subjectTokenType: 'access_token',
      scope,
      clientIp,
      signal: deadline,
    });
  } catch (error) {
    if (error instanceof Unavailable) throw error;
    if (error instanceof TxnTokenError && error.code === 'LOCKSTEP_TXN_TOKEN_REFUSED') {
      // The subject is revoked or the access token no longer valid: the session is over.
      sessions.delete(session.id);
      throw new Unavailable('LOGIN_REQUIRED', `token exchange refused: ${error.error ?? error.status}`);
    }
    if (error instanceof oidc.ResponseBodyError) {
      // The provider answered and refused the refresh (the grant is revoked or expired): sign in again.
      // Not an outage: only no answer counts as one (the monitor's control-plane-unreachable rule).
      sessions.delete(session.id);
      throw new Unavailable('LOGIN_REQUIRED', `refresh refused: ${error.error}`);
    }
    throw new Unavailable('CONTROL_PLANE_UNAVAILABLE', deadline.aborted ? noAnswer() : (error as Error).message);
  }
}

/**
 * The gateway's own decisions, in the guard's event shape, to its audit file: one per API call, with
 * the transaction it started (so the chain gateway → orders → inventory → payments shares one `txn`).
 * They go where the guard's own events go: the guard's audit file sink takes every event published.
 */
function audit(
  request: FastifyRequest,
  requestId: string,
  sub: string | null,
  txn: string | null,
  allowed: boolean,
  reason: string,
  startedAt: number,
): void {
  const route = request.routeOptions.url ?? request.url.split('?')[0] ?? '';
  publishDecision({
    time: new Date().toISOString(),
    service: 'gateway',
    requestId,
    caller: null,
    sub,
    txn,
    method: request.method,
    route,
    action: `gateway:${request.method} ${route}`,
    resource: 'gateway',
    decision: allowed ? 'allow' : 'deny',
    policyIds: [],
    policyVersion: null,
    reason,
    dryRun: false,
    latencyMs: Math.round((performance.now() - startedAt) * 1000) / 1000,
    traceId: null,
  });
}

/**
 * Calls a service on the signed-in user's behalf; answers with its status and body, or a 503 of our own —
 * also when the control plane or the service has not answered by the request's deadline.
 */
async function forward(
  request: FastifyRequest,
  reply: FastifyReply,
  service: 'orders' | 'inventory',
  method: 'GET' | 'POST',
  path: string,
  body?: unknown,
) {
  const session = sessionOf(request);
  const requestId = randomUUID();
  const startedAt = performance.now();
  const deadline = outboundDeadline();
  let txn: string | null = null;
  const headers: Record<string, string> = { 'content-type': 'application/json' };
  const init = { method, signal: deadline, headers, ...(body === undefined ? {} : { body: JSON.stringify(body) }) };
  let response;
  let answer: Record<string, unknown>;
  try {
    if (perimeterOnly) {
      response = await plainRequest(`${config.urls[service]}${path}`, {
        ...init,
        headers: { ...init.headers, 'x-user': session.sub },
      });
    } else {
      // As narrow as the call (§4.1): placing an order, or reading orders and the catalogue.
      const scope = method === 'POST' ? 'orders:create' : 'orders:read';
      const txnToken = await txnTokenFor(session, request.ip, scope, deadline);
      // From the TTS over mTLS: read, not verified again, for the audit event's transaction id.
      txn = String(decodeJwt(txnToken).txn);
      response = await guard.client.request(`${config.urls[service]}${path}`, { ...init, txnToken });
    }
    // A body that is not JSON is passed on as {}; one cut off by the deadline is a 503 like any other.
    answer = (await response.body.json().catch((error: unknown) => {
      if (deadline.aborted) throw error;
      return {};
    })) as Record<string, unknown>;
  } catch (error) {
    if (error instanceof Unavailable) {
      audit(request, requestId, session.sub, txn, false, error.code, startedAt);
      log('warn', 'refused a new transaction', { requestId, code: error.code, reason: error.message });
      return reply
        .code(error.code === 'LOGIN_REQUIRED' ? 401 : 503)
        .send({ error: error.code, requestId, ...(error.code === 'LOGIN_REQUIRED' ? { login: '/login' } : {}) });
    }
    audit(request, requestId, session.sub, txn, false, 'SERVICE_UNAVAILABLE', startedAt);
    log('warn', 'service unreachable', {
      requestId,
      service,
      error: deadline.aborted ? noAnswer() : (error as Error).message,
    });
    return reply.code(503).send({ error: 'SERVICE_UNAVAILABLE', service, requestId });
  }
  // A refusal is recorded by its status, never by the code the service sent: that is the service's
  // word (its own guard records its decision), and one that said CONTROL_PLANE_UNAVAILABLE would
  // have the monitor take the gateway's record for an outage, or for nobody's doing.
  audit(
    request,
    requestId,
    session.sub,
    txn,
    response.statusCode < 400,
    response.statusCode < 400 ? 'LOCKSTEP_ALLOW' : `DOWNSTREAM_${response.statusCode}`,
    startedAt,
  );
  // The service's answer goes out as is (its refusals carry a code and its request id), never a token.
  return reply.code(response.statusCode).send(answer);
}

const ITEMS = new Set(['tea', 'coffee', 'cocoa']);
function orderProblem(body: unknown): string | null {
  if (typeof body !== 'object' || body === null || Array.isArray(body))
    return 'body: send a JSON object { "item", "quantity" }';
  const { item, quantity, ...rest } = body as Record<string, unknown>;
  const extra = Object.keys(rest);
  if (extra.length > 0) return `${extra[0]}: unknown field`;
  if (typeof item !== 'string' || !ITEMS.has(item)) return `item: one of ${[...ITEMS].join(', ')}`;
  if (typeof quantity !== 'number' || !Number.isInteger(quantity) || quantity < 1 || quantity > 10)
    return 'quantity: a whole number from 1 to 10';
  return null;
}

app.get('/api/session', reads, async (request) => {
  const session = sessionOf(request);
  return { user: { sub: session.sub }, csrf: session.csrf };
});
// Signing out takes no body: at most an empty JSON object.
app.post('/logout', writes(64), async (request, reply) => {
  sessions.delete(sessionOf(request).id);
  return reply.clearCookie('shop_session', cookieOptions).send({ ok: true });
});
app.get('/api/items', reads, async (request, reply) => forward(request, reply, 'inventory', 'GET', '/items'));
app.get('/api/orders', reads, async (request, reply) => forward(request, reply, 'orders', 'GET', '/orders'));
app.get('/api/orders/:id', reads, async (request, reply) => {
  const { id } = request.params as { id: string };
  if (!/^[\w-]{1,64}$/.test(id))
    return reply.code(400).send({ error: 'INVALID_REQUEST', message: 'id: an order id', requestId: randomUUID() });
  return forward(request, reply, 'orders', 'GET', `/orders/${encodeURIComponent(id)}`);
});
// An order is a few dozen bytes of JSON; 4 KiB is ample.
app.post('/api/orders', writes(4 * 1024), async (request, reply) => {
  const problem = orderProblem(request.body);
  if (problem !== null)
    return reply.code(400).send({ error: 'INVALID_REQUEST', message: problem, requestId: randomUUID() });
  return forward(request, reply, 'orders', 'POST', '/orders', request.body);
});

await app.listen({ host: '127.0.0.1', port: config.port });
if (!secureCookies)
  log(
    'warn',
    `the gateway serves plain HTTP on 127.0.0.1:${config.port} (localhost only). For anything else set GATEWAY_TLS_CERT and GATEWAY_TLS_KEY.`,
  );
log('info', 'edge limits (examples/shop/services/edge-limits.ts says how to change them)', { ...limits });
ready(origin);
onStop(async () => {
  await app.close();
  await agent.close();
  await guard.close();
});
