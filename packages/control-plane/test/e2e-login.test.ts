/**
 * End to end over real TLS, nothing stubbed: the control plane starts → a Fastify service bootstraps
 * with a join token (its guard gets everything from the agent, follows the stream and fetches the
 * Txn-Token JWKS by URL) → a user
 * signs in through authorization code + PKCE (a scripted browser follows the redirects and posts the
 * login form) → the gateway redeems the code with its SVID (tls_client_auth), exchanges the access
 * token for a Txn-Token and calls the service over mTLS → the service accepts. Then a policy change
 * and a `sub` revocation are each enforced by the service within 1 s (measured and printed), and a
 * Txn-Token key rotation is followed without a refused request.
 */
import assert from 'node:assert/strict';
import { cpSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import Fastify, { type FastifyInstance } from 'fastify';
import { decodeJwt, decodeProtectedHeader } from 'jose';
import { Agent, request } from 'undici';
import { createGuard, type Guard } from '@lockstep/guard';
import { lockstep } from '@lockstep/guard/fastify';
import { createTestBrowser } from '@lockstep/testkit';
import {
  createJoinToken,
  createPolicyService,
  createSubjectVerifier,
  createTxnTokenService,
  createUser,
  openKeyRing,
  openSigningKey,
  openSqliteStore,
  openWorkloadCa,
  startControlPlane,
  type ControlPlaneStore,
  type KeyRing,
  type PolicyService,
  type RunningControlPlane,
} from '../src/index.ts';
import {
  joinAsWorkload,
  joinControlPlane,
  TOKEN_EXCHANGE_GRANT,
  TOKEN_TYPE,
  type WorkloadAgent,
  type WorkloadCredentials,
} from '@lockstep/workload';
import { authorizationRequest, signIn, type RelyingParty } from './support/oidc-client.ts';

const TD = 'shop.test';
const RESOURCE = 'https://gateway.shop.test/api';
const REDIRECT = 'https://gateway.shop.test/callback';
const PASSWORD = 'lantern orchard violin 7';
const scratch = mkdtempSync(join(tmpdir(), 'lockstep-e2e-'));
const policyDir = join(scratch, 'policies');
const quiet = { info() {}, warn() {}, error() {} };

let store: ControlPlaneStore;
let policy: PolicyService;
let txnKeys: KeyRing;
let controlPlane: RunningControlPlane;
let gateway: WorkloadCredentials;
let agent: WorkloadAgent;
let guard: Guard;
let orders: FastifyInstance;
let ordersUrl: string;
let rp: RelyingParty;

before(async () => {
  cpSync(new URL('../../guard/example/policies/', import.meta.url), policyDir, { recursive: true });
  writeFileSync(
    join(policyDir, 'tts.cedar'),
    `
@id("gateway-exchanges-user-tokens")
permit (principal == Lockstep::Workload::"spiffe://shop.test/svc/gateway", action == Lockstep::Action::"tts:exchange:access_token", resource == Lockstep::Service::"tts");
`,
  );
  const keyDir = join(scratch, 'keys');
  const ca = await openWorkloadCa({ trustDomain: TD, keyDir });
  store = openSqliteStore(join(scratch, 'cp.db'));
  const policyKey = await openSigningKey(keyDir, 'policy');
  policy = await createPolicyService({ dir: policyDir, signingKey: policyKey });
  txnKeys = await openKeyRing(keyDir, 'txn-token', { retainMs: 600_000 });
  const subjects = createSubjectVerifier({ issuers: [], txnTokenKeys: () => txnKeys.publicJwks(), trustDomain: TD });
  const tts = createTxnTokenService({
    trustDomain: TD,
    keys: txnKeys,
    subjects,
    isRevoked: (kind, value) => store.isRevoked(kind, value),
  });
  controlPlane = await startControlPlane({
    ca,
    store,
    policy,
    tts,
    idp: {
      keys: await openKeyRing(keyDir, 'idp', { retainMs: 3_600_000 }),
      cookieKeys: ['e2e-cookie-secret-0123456789abcdef0123456789'],
      clients: [
        {
          client_id: 'gateway',
          token_endpoint_auth_method: 'tls_client_auth',
          tls_client_auth_san_uri: `spiffe://${TD}/svc/gateway`,
          client_name: 'Lockstep Shop',
          redirect_uris: [REDIRECT],
        },
      ],
      resource: { indicator: RESOURCE, scopes: ['orders:read', 'orders:create'] },
    },
  });
  await createUser(store, { username: 'alice', password: PASSWORD, roles: ['customer'], tenant: 'acme' });
  rp = {
    issuer: controlPlane.idp?.issuer ?? '',
    clientId: 'gateway',
    clientSecret: '',
    redirectUri: REDIRECT,
    resource: RESOURCE,
    ca: ca.bundlePem,
  };

  // The orders service: one join token, then the agent keeps its guard in step.
  const { token } = await createJoinToken(store, ca, { service: 'orders', createdBy: 'cli' });
  agent = await joinAsWorkload({ url: controlPlane.url, trustDomain: TD, joinToken: token, service: 'orders' });
  // Everything the guard needs comes from the agent: identity, trust bundle, Txn-Token JWKS URL, policy keys.
  guard = await createGuard({ ...agent.guardOptions({ auditSpoolDir: false }), logger: quiet });
  agent.attach(guard);
  orders = Fastify({ https: guard.tlsOptions() });
  await orders.register(lockstep, { guard });
  orders.get('/orders/:id', { config: { lockstep: { action: 'orders:read' } } }, async (request) => ({
    id: (request.params as { id: string }).id,
  }));
  await orders.listen({ host: '127.0.0.1', port: 0 });
  ordersUrl = `https://127.0.0.1:${(orders.server.address() as { port: number }).port}`;

  const gatewayToken = await createJoinToken(store, ca, { service: 'gateway', createdBy: 'cli' });
  gateway = await joinControlPlane({
    url: controlPlane.url,
    trustDomain: TD,
    joinToken: gatewayToken.token,
    service: 'gateway',
  });
});

after(async () => {
  await orders.close();
  await agent.close();
  await guard.close();
  await controlPlane.close();
  policy.close();
  await store.close();
  rmSync(scratch, { recursive: true, force: true });
});

/** The gateway's mTLS connection pool: its SVID, the trust bundle. */
const gatewayAgent = () =>
  new Agent({
    connect: {
      cert: gateway.chainPem,
      key: gateway.keyPem,
      ca: gateway.bundlePem,
      checkServerIdentity: () => undefined,
    },
  });

async function post(
  url: string,
  fields: Record<string, string>,
): Promise<{ status: number; body: Record<string, unknown> }> {
  const pool = gatewayAgent();
  try {
    const response = await request(url, {
      method: 'POST',
      dispatcher: pool,
      headers: { 'content-type': 'application/x-www-form-urlencoded' },
      body: new URLSearchParams(fields).toString(),
    });
    return { status: response.statusCode, body: (await response.body.json()) as Record<string, unknown> };
  } finally {
    await pool.close();
  }
}

/** What the gateway does after the callback: redeem the code (with its SVID), then exchange for a Txn-Token. */
async function gatewayTxnToken(code: string, verifier: string): Promise<string> {
  const tokens = await post(`${rp.issuer}/token`, {
    grant_type: 'authorization_code',
    client_id: 'gateway',
    code,
    redirect_uri: REDIRECT,
    code_verifier: verifier,
    resource: RESOURCE,
  });
  assert.equal(tokens.status, 200, JSON.stringify(tokens.body));
  const exchanged = await post(`${controlPlane.url}/v1/token`, {
    grant_type: TOKEN_EXCHANGE_GRANT,
    requested_token_type: TOKEN_TYPE.txnToken,
    audience: TD,
    subject_token: String(tokens.body.access_token),
    subject_token_type: TOKEN_TYPE.accessToken,
    scope: 'orders:read',
  });
  assert.equal(exchanged.status, 200, JSON.stringify(exchanged.body));
  assert.equal(exchanged.body.token_type, 'N_A');
  return String(exchanged.body.access_token);
}

async function callOrders(txnToken: string): Promise<number> {
  const pool = gatewayAgent();
  try {
    const response = await request(`${ordersUrl}/orders/42`, { dispatcher: pool, headers: { 'txn-token': txnToken } });
    await response.body.dump();
    return response.statusCode;
  } finally {
    await pool.close();
  }
}

async function until(txnToken: string, expected: number, limitMs = 5_000): Promise<number> {
  const started = performance.now();
  while (performance.now() - started < limitMs) {
    if ((await callOrders(txnToken)) === expected) return performance.now() - started;
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
  return assert.fail(`the service still does not answer ${expected} after ${limitMs} ms`);
}

describe('end to end: login → Txn-Token → service', () => {
  let txnToken: string;

  it('a user signs in (code + PKCE, real login form), the gateway gets a Txn-Token, the service accepts it', async () => {
    const browser = createTestBrowser({ ca: rp.ca });
    try {
      const authorization = authorizationRequest(rp, 'openid orders:read orders:create');
      const callback = await signIn(browser, rp, authorization, 'alice', PASSWORD);
      assert.equal(callback.get('state'), authorization.state);
      assert.equal(callback.get('iss'), rp.issuer, 'RFC 9207 issuer in the response');
      txnToken = await gatewayTxnToken(String(callback.get('code')), authorization.verifier);
    } finally {
      await browser.close();
    }
    const claims = decodeJwt(txnToken);
    assert.equal(claims.sub, 'alice');
    assert.equal(claims.req_wl, gateway.spiffeId);
    assert.deepEqual(claims.tctx, { roles: ['customer'], tenant: 'acme' });
    assert.equal(claims.scope, 'orders:read');
    await until(txnToken, 200);
  });

  it('enforces a policy change in the service within 1 s', async () => {
    assert.equal(await callOrders(txnToken), 200);
    const changedAt = performance.now();
    writeFileSync(
      join(policyDir, 'orders.cedar'),
      '@id("gateway-admin-read")\npermit (principal == Lockstep::Workload::"spiffe://shop.test/svc/gateway", action == Lockstep::Action::"orders:read", resource == Lockstep::Service::"orders") when { context.roles.contains("admin") };\n',
    );
    await until(txnToken, 403);
    const elapsed = performance.now() - changedAt;
    console.log(`e2e: policy change enforced by the service in ${elapsed.toFixed(0)} ms (limit 1000 ms)`);
    assert.ok(elapsed <= 1_000, `policy change took ${elapsed.toFixed(0)} ms`);
    cpSync(new URL('../../guard/example/policies/orders.cedar', import.meta.url), join(policyDir, 'orders.cedar'));
    await until(txnToken, 200);
  });

  it('follows a Txn-Token key rotation: tokens signed before and after are both accepted', async () => {
    const before = decodeProtectedHeader(txnToken).kid;
    const rotation = await txnKeys.rotate();
    assert.equal(rotation.retired, before);
    const browser = createTestBrowser({ ca: rp.ca });
    try {
      const authorization = authorizationRequest(rp, 'openid orders:read');
      const callback = await signIn(browser, rp, authorization, 'alice', PASSWORD);
      const fresh = await gatewayTxnToken(String(callback.get('code')), authorization.verifier);
      assert.equal(
        decodeProtectedHeader(fresh).kid,
        rotation.current,
        'signed with the key that was published as next',
      );
      assert.equal(await callOrders(fresh), 200, 'the guard had the new key before it signed anything');
      assert.equal(await callOrders(txnToken), 200, 'a token of the retired key stays valid until it expires');
    } finally {
      await browser.close();
    }
  });

  it('enforces a sub revocation in the service within 1 s, and the revoked user gets no new Txn-Token', async () => {
    assert.equal(await callOrders(txnToken), 200);
    const revokedAt = performance.now();
    await controlPlane.revoke({
      kind: 'sub',
      value: 'alice',
      reason: 'account takeover',
      actor: 'spiffe://shop.test/admin/ops',
    });
    await until(txnToken, 401);
    const elapsed = performance.now() - revokedAt;
    console.log(`e2e: sub revocation enforced by the service in ${elapsed.toFixed(0)} ms (limit 1000 ms)`);
    assert.ok(elapsed <= 1_000, `revocation took ${elapsed.toFixed(0)} ms`);
    const browser = createTestBrowser({ ca: rp.ca });
    try {
      const page = await browser.open(authorizationRequest(rp, 'openid orders:read').url, {
        stopAt: (url) => url.href.startsWith(REDIRECT),
      });
      const refused = await browser.submit(
        page,
        { username: 'alice', password: PASSWORD },
        { stopAt: (url) => url.href.startsWith(REDIRECT) },
      );
      assert.equal(refused.status, 403, 'a revoked user cannot sign in again');
    } finally {
      await browser.close();
    }
  });
});
