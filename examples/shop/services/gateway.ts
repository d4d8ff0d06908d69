/**
 * gateway — the shop's edge. Serves the web page; users sign in through the control plane's OpenID
 * provider (authorization code + PKCE, openid-client; the gateway authenticates with its SVID,
 * tls_client_auth). For every API call it exchanges the user's access token for a Txn-Token and calls
 * the services over mTLS. The access token never goes inward and a Txn-Token never goes outward.
 *
 * Browser hygiene: a server-side session behind an HttpOnly, SameSite=Lax cookie (Secure under TLS),
 * a CSRF token required on every state-changing call, a CSP without inline script, frame-ancestors
 * none, nosniff, HSTS under TLS; login and API calls are rate limited. TLS at the edge when
 * GATEWAY_TLS_CERT and GATEWAY_TLS_KEY name a certificate; otherwise plain HTTP on 127.0.0.1 only,
 * and it says so.
 *
 * In perimeter-only mode (the drill's "before") the edge is the same, but the services behind it are
 * called over plain HTTP with the user in a header, trusted as is.
 */
import { randomBytes, randomUUID, timingSafeEqual } from 'node:crypto';
import { readFileSync } from 'node:fs';
import Fastify, { type FastifyInstance, type FastifyReply, type FastifyRequest } from 'fastify';
import cookie from '@fastify/cookie';
import rateLimit from '@fastify/rate-limit';
import * as oidc from 'openid-client';
import { fetch as undiciFetch, request as plainRequest, type Agent, type Dispatcher } from 'undici';
import { decodeJwt } from 'jose';
import { publishDecision } from '@lockstep/guard';
import { controlPlaneAgent, TOKEN_EXCHANGE_GRANT, TOKEN_TYPE } from '@lockstep/control-plane';
import { log, onStop, ready, secure, settings } from './runtime.ts';

const config = settings();
const RESOURCE = process.env.SHOP_API_RESOURCE ?? 'https://shop.test/api';
const SCOPE = 'openid offline_access orders:read orders:create';
const SESSION_IDLE_MS = 30 * 60_000;
const SESSION_MAX_MS = 8 * 3_600_000;
const tlsCert = process.env.GATEWAY_TLS_CERT;
const tlsKey = process.env.GATEWAY_TLS_KEY;
const secureCookies = tlsCert !== undefined && tlsKey !== undefined;
const origin = process.env.SHOP_PUBLIC_URL ?? `${secureCookies ? 'https' : 'http'}://localhost:${config.port}`;

// The gateway always has an identity: the control plane's IdP knows it by its SVID (tls_client_auth).
const perimeterOnly = config.mode === 'perimeter-only';
const { guard, agent } = await secure({ ...config, mode: 'lockstep' });
const trustDomain = config.controlPlane?.trustDomain ?? '';

// One mTLS connection pool to the control plane per SVID (renewed at half-life).
let pool: { chain: string; dispatcher: Agent } | null = null;
function controlPlane(): Dispatcher {
  const { chainPem, keyPem, bundlePem } = agent.credentials;
  if (pool?.chain !== chainPem) {
    void pool?.dispatcher.close();
    pool = { chain: chainPem, dispatcher: controlPlaneAgent(trustDomain, { cert: chainPem, key: keyPem, ca: bundlePem }) };
  }
  return pool.dispatcher;
}
const mtlsFetch: oidc.CustomFetch = (url, options) => undiciFetch(url, { ...options, dispatcher: controlPlane() } as Parameters<typeof undiciFetch>[1]) as unknown as ReturnType<oidc.CustomFetch>;

const oidcConfig = await oidc.discovery(new URL(`${config.urls.controlPlane}/oidc`), 'gateway', {
  token_endpoint_auth_method: 'tls_client_auth',
  id_token_signed_response_alg: 'ES256',
}, oidc.TlsClientAuth(), { [oidc.customFetch]: mtlsFetch });
oidcConfig[oidc.customFetch] = mtlsFetch;

interface Session {
  readonly id: string;
  readonly sub: string;
  readonly csrf: string;
  readonly createdAt: number;
  lastSeen: number;
  accessToken: string;
  refreshToken: string | undefined;
  expiresAt: number;
}
interface LoginState { readonly verifier: string; readonly state: string; readonly nonce: string; readonly at: number }

const sessions = new Map<string, Session>();
const logins = new Map<string, LoginState>();
setInterval(() => {
  const now = Date.now();
  for (const [id, session] of sessions) if (now - session.lastSeen > SESSION_IDLE_MS || now - session.createdAt > SESSION_MAX_MS) sessions.delete(id);
  for (const [id, login] of logins) if (now - login.at > 10 * 60_000) logins.delete(id);
}, 60_000).unref();

const cookieOptions = { httpOnly: true, sameSite: 'lax' as const, secure: secureCookies, path: '/' };

const app = (secureCookies
  ? Fastify({ logger: false, trustProxy: false, https: { cert: readFileSync(tlsCert as string), key: readFileSync(tlsKey as string), minVersion: 'TLSv1.2' } })
  : Fastify({ logger: false, trustProxy: false })) as unknown as FastifyInstance;
await app.register(cookie);
await app.register(rateLimit, { global: false });

app.addHook('onSend', async (request, reply, payload) => {
  reply.header('content-security-policy', "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'");
  reply.header('x-content-type-options', 'nosniff');
  reply.header('x-frame-options', 'DENY');
  reply.header('referrer-policy', 'no-referrer');
  reply.header('cross-origin-opener-policy', 'same-origin');
  if (secureCookies) reply.header('strict-transport-security', 'max-age=31536000');
  if (request.url.startsWith('/api/') || request.url.startsWith('/callback')) reply.header('cache-control', 'no-store');
  return payload;
});

// Errors never carry a stack trace or a downstream's details: a code, a request id.
app.setErrorHandler((error: Error & { statusCode?: number; validation?: unknown }, request, reply) => {
  const requestId = randomUUID();
  if (error.statusCode === 429) return reply.code(429).send({ error: 'RATE_LIMITED', requestId });
  if (error.validation !== undefined || error.statusCode === 400) return reply.code(400).send({ error: 'INVALID_REQUEST', message: error.message, requestId });
  log('error', 'unexpected error', { requestId, url: request.url, error: error.message });
  return reply.code(500).send({ error: 'INTERNAL', requestId });
});

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

const loginLimit = { config: { rateLimit: { max: 20, timeWindow: '1 minute' } } };
// Per session — but only a session that exists: a made-up cookie value must not buy a fresh bucket.
const apiLimit = { config: { rateLimit: { max: 300, timeWindow: '1 minute', keyGenerator: (request: FastifyRequest) => { const id = request.cookies.shop_session; return id !== undefined && sessions.has(id) ? `session:${id}` : `ip:${request.ip}`; } } } };

app.get('/login', loginLimit, async (_request, reply) => {
  const login: LoginState = { verifier: oidc.randomPKCECodeVerifier(), state: oidc.randomState(), nonce: oidc.randomNonce(), at: Date.now() };
  const id = randomBytes(24).toString('base64url');
  logins.set(id, login);
  const url = oidc.buildAuthorizationUrl(oidcConfig, {
    redirect_uri: `${origin}/callback`, scope: SCOPE, resource: RESOURCE, state: login.state, nonce: login.nonce,
    code_challenge: await oidc.calculatePKCECodeChallenge(login.verifier), code_challenge_method: 'S256',
  });
  return reply.setCookie('shop_login', id, { ...cookieOptions, maxAge: 600 }).redirect(url.href, 303);
});

app.get('/callback', loginLimit, async (request, reply) => {
  const loginId = request.cookies.shop_login;
  const login = loginId === undefined ? undefined : logins.get(loginId);
  if (loginId !== undefined) logins.delete(loginId);
  reply.clearCookie('shop_login', cookieOptions);
  if (login === undefined) return reply.code(400).type('text/plain').send('This sign-in has expired or was started in another browser. Go back to the shop and sign in again.');
  let tokens;
  try {
    tokens = await oidc.authorizationCodeGrant(oidcConfig, new URL(request.url, origin), {
      pkceCodeVerifier: login.verifier, expectedState: login.state, expectedNonce: login.nonce, idTokenExpected: true,
    }, { resource: RESOURCE });
  } catch (error) {
    log('warn', 'sign-in failed', { error: (error as Error).message });
    return reply.code(400).type('text/plain').send('Sign-in failed. Go back to the shop and try again.');
  }
  const claims = tokens.claims();
  const now = Date.now();
  const session: Session = {
    id: randomBytes(32).toString('base64url'), sub: String(claims?.sub), csrf: randomBytes(32).toString('base64url'), createdAt: now, lastSeen: now,
    accessToken: tokens.access_token, refreshToken: tokens.refresh_token, expiresAt: now + (tokens.expiresIn() ?? 600) * 1000,
  };
  sessions.set(session.id, session);
  log('info', 'signed in', { sub: session.sub });
  return reply.setCookie('shop_session', session.id, { ...cookieOptions, maxAge: SESSION_MAX_MS / 1000 }).redirect('/', 303);
});

function sessionOf(request: FastifyRequest): Session | null {
  const id = request.cookies.shop_session;
  const session = id === undefined ? undefined : sessions.get(id);
  if (session === undefined) return null;
  const now = Date.now();
  if (now - session.lastSeen > SESSION_IDLE_MS || now - session.createdAt > SESSION_MAX_MS) {
    sessions.delete(session.id);
    return null;
  }
  session.lastSeen = now;
  return session;
}

function requireSession(request: FastifyRequest, reply: FastifyReply, stateChanging: boolean): Session | null {
  const session = sessionOf(request);
  if (session === null) {
    void reply.code(401).send({ error: 'LOGIN_REQUIRED', login: '/login' });
    return null;
  }
  if (stateChanging) {
    const sent = Buffer.from(String(request.headers['x-csrf-token'] ?? ''));
    const expected = Buffer.from(session.csrf);
    if (sent.length !== expected.length || !timingSafeEqual(sent, expected)) {
      void reply.code(403).send({ error: 'CSRF_TOKEN_INVALID', hint: 'send the token from GET /api/session in the X-CSRF-Token header' });
      return null;
    }
  }
  return session;
}

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
async function txnTokenFor(session: Session, clientIp: string, scope: string): Promise<string> {
  try {
    if (session.expiresAt - Date.now() < 30_000 && session.refreshToken !== undefined) {
      const refreshed = await oidc.refreshTokenGrant(oidcConfig, session.refreshToken, { resource: RESOURCE });
      session.accessToken = refreshed.access_token;
      session.refreshToken = refreshed.refresh_token ?? session.refreshToken;
      session.expiresAt = Date.now() + (refreshed.expiresIn() ?? 600) * 1000;
    }
    const response = await undiciFetch(`${config.urls.controlPlane}/v1/token`, {
      method: 'POST',
      dispatcher: controlPlane(),
      headers: { 'content-type': 'application/x-www-form-urlencoded' },
      body: new URLSearchParams({
        grant_type: TOKEN_EXCHANGE_GRANT, requested_token_type: TOKEN_TYPE.txnToken, audience: trustDomain, scope,
        subject_token: session.accessToken, subject_token_type: TOKEN_TYPE.accessToken, request_context: JSON.stringify({ req_ip: clientIp }),
      }).toString(),
    });
    const body = await response.json() as { access_token?: string; error?: string; error_description?: string };
    if (!response.ok || typeof body.access_token !== 'string') {
      // The subject is revoked or the access token no longer valid: the session is over.
      sessions.delete(session.id);
      throw new Unavailable('LOGIN_REQUIRED', `token exchange refused: ${body.error ?? response.status}`);
    }
    return body.access_token;
  } catch (error) {
    if (error instanceof Unavailable) throw error;
    throw new Unavailable('CONTROL_PLANE_UNAVAILABLE', (error as Error).message);
  }
}

/**
 * The gateway's own decisions, in the guard's event shape, to its audit file: one per API call, with
 * the transaction it started (so the chain gateway → orders → inventory → payments shares one `txn`).
 * They go where the guard's own events go: the guard's audit file sink takes every event published.
 */
function audit(request: FastifyRequest, requestId: string, sub: string | null, txn: string | null, allowed: boolean, reason: string, startedAt: number): void {
  const route = request.routeOptions.url ?? request.url.split('?')[0] ?? '';
  publishDecision({
    time: new Date().toISOString(), service: 'gateway', requestId, caller: null, sub, txn, method: request.method, route,
    action: `gateway:${request.method} ${route}`, resource: 'gateway', decision: allowed ? 'allow' : 'deny', policyIds: [], policyVersion: null,
    reason, dryRun: false, latencyMs: Math.round((performance.now() - startedAt) * 1000) / 1000, traceId: null,
  });
}

/** Calls a service on the user's behalf; answers with its status and body, or a 503 of our own. */
async function forward(request: FastifyRequest, reply: FastifyReply, session: Session, service: 'orders' | 'inventory', method: 'GET' | 'POST', path: string, body?: unknown) {
  const requestId = randomUUID();
  const startedAt = performance.now();
  let txn: string | null = null;
  const init = { method, headers: { 'content-type': 'application/json' } as Record<string, string>, ...(body === undefined ? {} : { body: JSON.stringify(body) }) };
  let response;
  try {
    if (perimeterOnly) {
      response = await plainRequest(`${config.urls[service]}${path}`, { ...init, headers: { ...init.headers, 'x-user': session.sub } });
    } else {
      // As narrow as the call (§4.1): placing an order, or reading orders and the catalogue.
      const txnToken = await txnTokenFor(session, request.ip, method === 'POST' ? 'orders:create' : 'orders:read');
      // From the TTS over mTLS: read, not verified again, for the audit event's transaction id.
      txn = String(decodeJwt(txnToken).txn);
      response = await guard.client.request(`${config.urls[service]}${path}`, { ...init, txnToken });
    }
  } catch (error) {
    if (error instanceof Unavailable) {
      audit(request, requestId, session.sub, txn, false, error.code, startedAt);
      log('warn', 'refused a new transaction', { requestId, code: error.code, reason: error.message });
      return reply.code(error.code === 'LOGIN_REQUIRED' ? 401 : 503).send({ error: error.code, requestId, ...(error.code === 'LOGIN_REQUIRED' ? { login: '/login' } : {}) });
    }
    audit(request, requestId, session.sub, txn, false, 'SERVICE_UNAVAILABLE', startedAt);
    log('warn', 'service unreachable', { requestId, service, error: (error as Error).message });
    return reply.code(503).send({ error: 'SERVICE_UNAVAILABLE', service, requestId });
  }
  const answer = await response.body.json().catch(() => ({})) as Record<string, unknown>;
  audit(request, requestId, session.sub, txn, response.statusCode < 400, response.statusCode < 400 ? 'LOCKSTEP_ALLOW' : String(answer.error ?? `HTTP_${response.statusCode}`), startedAt);
  // The service's answer goes out as is (its refusals carry a code and its request id), never a token.
  return reply.code(response.statusCode).send(answer);
}

const ITEMS = new Set(['tea', 'coffee', 'cocoa']);
function orderProblem(body: unknown): string | null {
  if (typeof body !== 'object' || body === null || Array.isArray(body)) return 'body: send a JSON object { "item", "quantity" }';
  const { item, quantity, ...rest } = body as Record<string, unknown>;
  const extra = Object.keys(rest);
  if (extra.length > 0) return `${extra[0]}: unknown field`;
  if (typeof item !== 'string' || !ITEMS.has(item)) return `item: one of ${[...ITEMS].join(', ')}`;
  if (typeof quantity !== 'number' || !Number.isInteger(quantity) || quantity < 1 || quantity > 10) return 'quantity: a whole number from 1 to 10';
  return null;
}

app.get('/api/session', apiLimit, async (request, reply) => {
  const session = requireSession(request, reply, false);
  if (session === null) return reply;
  return { user: { sub: session.sub }, csrf: session.csrf };
});
app.post('/logout', apiLimit, async (request, reply) => {
  const session = requireSession(request, reply, true);
  if (session === null) return reply;
  sessions.delete(session.id);
  return reply.clearCookie('shop_session', cookieOptions).send({ ok: true });
});
app.get('/api/items', apiLimit, async (request, reply) => {
  const session = requireSession(request, reply, false);
  return session === null ? reply : forward(request, reply, session, 'inventory', 'GET', '/items');
});
app.get('/api/orders', apiLimit, async (request, reply) => {
  const session = requireSession(request, reply, false);
  return session === null ? reply : forward(request, reply, session, 'orders', 'GET', '/orders');
});
app.get('/api/orders/:id', apiLimit, async (request, reply) => {
  const session = requireSession(request, reply, false);
  const { id } = request.params as { id: string };
  if (session === null) return reply;
  if (!/^[\w-]{1,64}$/.test(id)) return reply.code(400).send({ error: 'INVALID_REQUEST', message: 'id: an order id', requestId: randomUUID() });
  return forward(request, reply, session, 'orders', 'GET', `/orders/${encodeURIComponent(id)}`);
});
app.post('/api/orders', { ...apiLimit, bodyLimit: 4 * 1024 }, async (request, reply) => {
  const session = requireSession(request, reply, true);
  if (session === null) return reply;
  const problem = orderProblem(request.body);
  if (problem !== null) return reply.code(400).send({ error: 'INVALID_REQUEST', message: problem, requestId: randomUUID() });
  return forward(request, reply, session, 'orders', 'POST', '/orders', request.body);
});

await app.listen({ host: '127.0.0.1', port: config.port });
if (!secureCookies) log('warn', `the gateway serves plain HTTP on 127.0.0.1:${config.port} (localhost only). For anything else set GATEWAY_TLS_CERT and GATEWAY_TLS_KEY.`);
ready(origin);
onStop(async () => {
  await app.close();
  await agent.close();
  await guard.close();
  await pool?.dispatcher.close();
});
