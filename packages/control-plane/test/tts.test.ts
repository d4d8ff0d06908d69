/**
 * The Txn-Token Service over real mTLS: the gateway exchanges a user's access token for a Txn-Token
 * that a guarded service accepts; every bad exchange of the issue is refused with its OAuth error.
 * Replacements (draft-ietf-oauth-transaction-tokens-10 §13.15) keep the transaction and its chain of
 * requesters, so the shop's own inventory policy admits orders' replaced token; self-signed subject
 * tokens (§11.2.1) are checked claim by claim against the requester's SVID key.
 */
import assert from 'node:assert/strict';
import { createPrivateKey, type KeyObject } from 'node:crypto';
import { cpSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import Fastify, { type FastifyInstance } from 'fastify';
import {
  CompactSign,
  SignJWT,
  decodeJwt,
  decodeProtectedHeader,
  exportJWK,
  generateKeyPair,
  type CryptoKey,
  type JSONWebKeySet,
  type JWK,
} from 'jose';
import { Agent, request } from 'undici';
import { createGuard, MAX_TXN_TOKEN_REPLACEMENTS as GUARD_MAX_REPLACEMENTS, type Guard } from '@lockstep/guard';
import { lockstep } from '@lockstep/guard/fastify';
import { loadPolicyDir, signBundle } from '@lockstep/policy';
import { issueCertificate } from '@lockstep/testkit';
import {
  createJoinToken,
  createPolicyService,
  createSubjectVerifier,
  createTxnTokenService,
  singleKey,
  openKeyRing,
  openSigningKey,
  openSqliteStore,
  openWorkloadCa,
  startControlPlane,
  MAX_TXN_TOKEN_REPLACEMENTS,
  type ControlPlaneStore,
  type PolicyService,
  type RunningControlPlane,
  type TxnTokenService,
  type WorkloadCa,
} from '../src/index.ts';
import {
  controlPlaneSpiffeId,
  joinControlPlane,
  TOKEN_EXCHANGE_GRANT,
  TOKEN_TYPE,
  type WorkloadCredentials,
} from '@lockstep/workload';
import type { TokenRevocationKind } from '../src/tts/txn-token-service.ts';
import type { SigningKey } from '../src/ca/signing-key.ts';

const TD = 'shop.test';
const IDP = 'https://idp.shop.test';
const GATEWAY_RESOURCE = 'https://gateway.shop.test';
const scratch = mkdtempSync(join(tmpdir(), 'lockstep-tts-'));
const policyDir = join(scratch, 'policies');
const SHOP_POLICIES = new URL('../../../examples/shop/policies/', import.meta.url);
const TTS_ID = controlPlaneSpiffeId(TD);

let ca: WorkloadCa;
let store: ControlPlaneStore;
let policy: PolicyService;
let tts: TxnTokenService;
let controlPlane: RunningControlPlane;
let idpKey: CryptoKey;
let strangerKey: CryptoKey;
let txnSigningKey: SigningKey;
let idpJwks: JSONWebKeySet;
const workloads: Record<string, WorkloadCredentials> = {};

before(async () => {
  cpSync(new URL('../../guard/example/policies/', import.meta.url), policyDir, { recursive: true });
  writeFileSync(
    join(policyDir, 'tts.cedar'),
    `
@id("gateway-exchanges-user-tokens")
permit (principal == Lockstep::Workload::"spiffe://shop.test/svc/gateway", action == Lockstep::Action::"tts:exchange:access_token", resource == Lockstep::Service::"tts");
@id("gateway-replaces-txn-tokens")
permit (principal == Lockstep::Workload::"spiffe://shop.test/svc/gateway", action == Lockstep::Action::"tts:exchange:txn_token", resource == Lockstep::Service::"tts");
@id("orders-replaces-txn-tokens")
permit (principal == Lockstep::Workload::"spiffe://shop.test/svc/orders", action == Lockstep::Action::"tts:exchange:txn_token", resource == Lockstep::Service::"tts");
@id("nightly-job-self-signed")
permit (principal == Lockstep::Workload::"spiffe://shop.test/svc/nightly-job", action == Lockstep::Action::"tts:exchange:self_signed", resource == Lockstep::Service::"tts");
@id("cleanup-job-self-signed")
permit (principal == Lockstep::Workload::"spiffe://shop.test/svc/cleanup-job", action == Lockstep::Action::"tts:exchange:self_signed", resource == Lockstep::Service::"tts");
`,
  );
  ca = await openWorkloadCa({ trustDomain: TD, keyDir: join(scratch, 'keys') });
  store = openSqliteStore(':memory:');
  policy = await createPolicyService({
    dir: policyDir,
    signingKey: await openSigningKey(join(scratch, 'keys'), 'policy'),
    watch: false,
  });
  const idp = await generateKeyPair('ES256');
  idpKey = idp.privateKey;
  strangerKey = (await generateKeyPair('ES256')).privateKey;
  idpJwks = { keys: [{ ...(await exportJWK(idp.publicKey)), kid: 'idp-1', alg: 'ES256' }] };
  txnSigningKey = await openSigningKey(join(scratch, 'keys'), 'txn-token');
  const subjects = createSubjectVerifier({
    issuers: [{ issuer: IDP, jwks: idpJwks, audience: GATEWAY_RESOURCE }],
    txnTokenKeys: () => tts.jwks,
    trustDomain: TD,
  });
  const isRevoked = (kind: TokenRevocationKind, value: string) => store.isRevoked(kind, value);
  tts = createTxnTokenService({ trustDomain: TD, keys: singleKey(txnSigningKey), subjects, isRevoked });
  controlPlane = await startControlPlane({ ca, store, policy, tts });
  for (const service of ['gateway', 'orders', 'inventory', 'payments', 'nightly-job', 'cleanup-job']) {
    const { token } = await createJoinToken(store, ca, { service, createdBy: 'cli' });
    workloads[service] = await joinControlPlane({ url: controlPlane.url, trustDomain: TD, joinToken: token, service });
  }
});
after(async () => {
  await controlPlane.close();
  policy.close();
  await store.close();
  rmSync(scratch, { recursive: true, force: true });
});

interface AccessTokenOptions {
  typ?: string;
  iss?: string;
  aud?: string;
  scope?: string;
  expiresIn?: number;
  key?: CryptoKey;
  kid?: string;
}
function accessToken(options: AccessTokenOptions = {}): Promise<string> {
  const now = Math.floor(Date.now() / 1000);
  return new SignJWT({
    scope: options.scope ?? 'orders:read orders:create',
    roles: ['customer'],
    tenant: 'acme',
    amr: ['pwd'],
  })
    .setProtectedHeader({ alg: 'ES256', typ: options.typ ?? 'at+jwt', kid: options.kid ?? 'idp-1' })
    .setIssuer(options.iss ?? IDP)
    .setAudience(options.aud ?? GATEWAY_RESOURCE)
    .setSubject('alice')
    .setIssuedAt(now - 10)
    .setExpirationTime(now + (options.expiresIn ?? 3600))
    .sign(options.key ?? idpKey);
}

const exchange = (as: string | null, fields: Record<string, string>, raw?: string) =>
  exchangeAt(controlPlane.url, as, fields, raw);

/** An exchange by workload `as` (null: no SVID) at the control plane at `url`. */
async function exchangeAt(url: string, as: string | null, fields: Record<string, string>, raw?: string) {
  const credentials = as === null ? {} : { cert: workloads[as]?.chainPem, key: workloads[as]?.keyPem };
  const agent = new Agent({ connect: { ca: ca.bundlePem, ...credentials, checkServerIdentity: () => undefined } });
  try {
    const response = await request(`${url}/v1/token`, {
      method: 'POST',
      dispatcher: agent,
      headers: { 'content-type': 'application/x-www-form-urlencoded' },
      body: raw ?? new URLSearchParams(fields).toString(),
    });
    return { status: response.statusCode, body: (await response.body.json()) as Record<string, string | number> };
  } finally {
    await agent.close();
  }
}

const base = (subjectToken: string, subjectTokenType: string = TOKEN_TYPE.accessToken, scope = 'orders:read') => ({
  grant_type: TOKEN_EXCHANGE_GRANT,
  requested_token_type: TOKEN_TYPE.txnToken,
  audience: TD,
  subject_token: subjectToken,
  subject_token_type: subjectTokenType,
  scope,
});

/** A Txn-Token for `as`, or the exchange's error. */
async function txnTokenFor(as: string, fields: Record<string, string>): Promise<string> {
  const answer = await exchange(as, fields);
  assert.equal(answer.status, 200, JSON.stringify(answer.body));
  return String(answer.body.access_token);
}

/** The gateway's Txn-Token for alice, for the purpose of placing an order. */
async function gatewayToken(scope = 'orders:create'): Promise<string> {
  const fields = base(await accessToken(), TOKEN_TYPE.accessToken, scope);
  return txnTokenFor('gateway', { ...fields, request_context: JSON.stringify({ req_ip: '203.0.113.7' }) });
}

/** A Txn-Token signed with the TTS's own key, claims as given (for what the TTS would never issue). */
function txnTokenSigned(
  claims: Record<string, unknown>,
  iat: number,
  exp: number,
  key: CryptoKey = txnSigningKey.privateKey,
) {
  return new SignJWT(claims)
    .setProtectedHeader({ alg: 'ES256', typ: 'txntoken+jwt', kid: txnSigningKey.kid })
    .setSubject('alice')
    .setAudience(TD)
    .setIssuedAt(iat)
    .setExpirationTime(exp)
    .sign(key);
}

/** `as` replaces `token` (subject_token_type txn_token). */
const replace = (as: string, token: string, scope = 'orders:create') =>
  exchange(as, base(token, TOKEN_TYPE.txnToken, scope));

interface Guarded {
  url: string;
  guard: Guard;
  close(): Promise<void>;
}

/** `service` behind a real guard (Fastify adapter) trusting the TTS's keys, with one route per action. */
async function guarded(
  service: string,
  bundle: string,
  keys: { keys: object[] },
  routes: Record<string, string>,
): Promise<Guarded> {
  const svid = { cert: workloads[service]?.chainPem ?? '', key: workloads[service]?.keyPem ?? '' };
  const guard: Guard = await createGuard({
    service,
    trustDomain: TD,
    trustBundle: ca.bundlePem,
    svid,
    txnTokenKeys: { jwks: tts.jwks },
    policy: { keys: keys as never, bundle },
    logger: { info() {}, warn() {}, error() {} },
  });
  const app: FastifyInstance = Fastify({ https: guard.tlsOptions() });
  await app.register(lockstep, { guard });
  for (const [route, action] of Object.entries(routes)) {
    const [method, path] = route.split(' ') as [string, string];
    app.route({
      method: method as 'GET',
      url: path,
      config: { lockstep: { action } },
      handler: async () => ({ ok: true }),
    });
  }
  await app.listen({ host: '127.0.0.1', port: 0 });
  return {
    url: `https://127.0.0.1:${(app.server.address() as { port: number }).port}`,
    guard,
    close: async () => {
      await app.close();
      await guard.close();
    },
  };
}

/** A request from workload `as` over mTLS with `token`: status and body. */
const call = (as: string, url: string, token: string, method: 'GET' | 'POST' = 'GET') =>
  callWith({ cert: workloads[as]?.chainPem ?? '', key: workloads[as]?.keyPem ?? '' }, url, token, method);

/** A request over mTLS with the client certificate `tls`, `token` and more `headers`: status, headers, body. */
async function callWith(
  tls: { cert: string; key: string },
  url: string,
  token: string,
  method: 'GET' | 'POST' = 'GET',
  headers: Record<string, string> = {},
) {
  const agent = new Agent({ connect: { ...tls, ca: ca.bundlePem, checkServerIdentity: () => undefined } });
  try {
    const response = await request(url, { method, dispatcher: agent, headers: { ...headers, 'txn-token': token } });
    const body = (await response.body.json()) as Record<string, unknown>;
    return { status: response.statusCode, headers: response.headers, body };
  } finally {
    await agent.close();
  }
}

/** The shop's own policies (examples/shop/policies), signed into `service`'s bundle with a test key. */
async function shopBundle(service: string): Promise<{ bundle: string; keys: { keys: object[] } }> {
  const { privateKey, publicKey } = await generateKeyPair('ES256');
  const bundle = await signBundle(await loadPolicyDir(SHOP_POLICIES.pathname), {
    privateKey,
    kid: 'shop-test',
    service,
  });
  return { bundle, keys: { keys: [{ ...(await exportJWK(publicKey)), kid: 'shop-test', alg: 'ES256', use: 'sig' }] } };
}

interface SelfSignedOptions {
  iss?: string;
  sub?: string;
  aud?: string | string[];
  iat?: number;
  exp?: number;
  scope?: string | null;
  key?: KeyObject | CryptoKey;
}

/** A self-signed subject token (§11.2.1) of nightly-job, signed with its SVID key unless `key` says otherwise. */
function selfSigned(options: SelfSignedOptions = {}): Promise<string> {
  const job = workloads['nightly-job']?.spiffeId ?? '';
  const iat = options.iat ?? Math.floor(Date.now() / 1000);
  const scope =
    options.scope === undefined ? { scope: 'reports:run' } : options.scope === null ? {} : { scope: options.scope };
  return new SignJWT(scope)
    .setProtectedHeader({ alg: 'ES256' })
    .setIssuer(options.iss ?? job)
    .setSubject(options.sub ?? job)
    .setAudience(options.aud ?? TTS_ID)
    .setIssuedAt(iat)
    .setExpirationTime(options.exp ?? iat + 60)
    .sign(options.key ?? createPrivateKey(workloads['nightly-job']?.keyPem ?? ''));
}

const selfSignedExchange = async (token: string, scope = 'reports:run', as = 'nightly-job') =>
  exchange(as, base(token, TOKEN_TYPE.selfSigned, scope));

describe('Txn-Token Service', () => {
  it("exchanges the gateway's user access token for a Txn-Token that a guarded service accepts", async () => {
    const answer = await exchange('gateway', {
      ...base(await accessToken()),
      scope: 'orders:read',
      request_context: JSON.stringify({ req_ip: '203.0.113.7' }),
    });
    assert.equal(answer.status, 200, JSON.stringify(answer.body));
    assert.equal(answer.body.issued_token_type, TOKEN_TYPE.txnToken);
    assert.equal(answer.body.token_type, 'N_A');
    assert.ok(!('refresh_token' in answer.body));
    const token = String(answer.body.access_token);
    assert.deepEqual(
      { ...decodeProtectedHeader(token) },
      { alg: 'ES256', typ: 'txntoken+jwt', kid: tts.jwks.keys[0]?.kid },
    );
    const claims = decodeJwt(token);
    assert.equal(claims.sub, 'alice');
    assert.equal(claims.aud, TD);
    assert.equal(claims.scope, 'orders:read');
    assert.equal(claims.req_wl, workloads.gateway?.spiffeId);
    assert.deepEqual(claims.tctx, { roles: ['customer'], tenant: 'acme' });
    assert.deepEqual(claims.rctx, { req_ip: '203.0.113.7', authn: 'pwd' });
    assert.ok((claims.exp as number) - (claims.iat as number) <= 300);
    assert.match(String(claims.txn), /^[0-9a-f-]{36}$/);

    // A guarded orders service, trusting the TTS's keys and the pushed policy slice, accepts it.
    const guard: Guard = await createGuard({
      service: 'orders',
      trustDomain: TD,
      trustBundle: ca.bundlePem,
      svid: { cert: workloads.orders?.chainPem ?? '', key: workloads.orders?.keyPem ?? '' },
      txnTokenKeys: { jwks: tts.jwks },
      policy: {
        keys: { keys: [(await openSigningKey(join(scratch, 'keys'), 'policy')).publicJwk] },
        bundle: (await policy.bundleFor('orders'))?.bundle ?? '',
      },
      logger: { info() {}, warn() {}, error() {} },
    });
    const app: FastifyInstance = Fastify({ https: guard.tlsOptions() });
    await app.register(lockstep, { guard });
    app.get('/orders/:id', { config: { lockstep: { action: 'orders:read' } } }, async () => ({ ok: true }));
    await app.listen({ host: '127.0.0.1', port: 0 });
    const agent = new Agent({
      connect: {
        cert: workloads.gateway?.chainPem,
        key: workloads.gateway?.keyPem,
        ca: ca.bundlePem,
        checkServerIdentity: () => undefined,
      },
    });
    try {
      const response = await request(`https://127.0.0.1:${(app.server.address() as { port: number }).port}/orders/7`, {
        dispatcher: agent,
        headers: { 'txn-token': token },
      });
      assert.equal(response.statusCode, 200, await response.body.text());
    } finally {
      await agent.close();
      await app.close();
      await guard.close();
    }
  });

  it('refuses an exchange by a workload the policy does not allow', async () => {
    const answer = await exchange('orders', base(await accessToken()));
    assert.deepEqual([answer.status, answer.body.error], [400, 'unauthorized_client']);
  });

  it('refuses expired, forged, unknown-issuer and ID-token subject tokens', async () => {
    const cases: [string, AccessTokenOptions][] = [
      ['expired', { expiresIn: -120 }],
      ['forged', { key: strangerKey }],
      ['unknown issuer', { iss: 'https://evil.example' }],
      ['an ID token', { typ: 'JWT' }],
      ['another audience', { aud: 'https://other.shop.test' }],
    ];
    for (const [what, options] of cases) {
      const answer = await exchange('gateway', base(await accessToken(options)));
      assert.deepEqual([answer.status, answer.body.error], [400, 'invalid_grant'], what);
    }
  });

  it('refuses a scope the subject token does not have', async () => {
    const answer = await exchange('gateway', {
      ...base(await accessToken({ scope: 'orders:read' })),
      scope: 'orders:read orders:delete',
    });
    assert.deepEqual([answer.status, answer.body.error], [400, 'invalid_scope']);
  });

  it('lets only allowed workloads replace a Txn-Token, and a replacement keeps its txn', async () => {
    const first = String((await exchange('gateway', base(await accessToken()))).body.access_token);
    const byPayments = await exchange('payments', base(first, TOKEN_TYPE.txnToken));
    assert.deepEqual([byPayments.status, byPayments.body.error], [400, 'unauthorized_client']);
    const replaced = await exchange('gateway', base(first, TOKEN_TYPE.txnToken));
    assert.equal(replaced.status, 200);
    assert.equal(decodeJwt(String(replaced.body.access_token)).txn, decodeJwt(first).txn);
  });

  it('issues self-signed Txn-Tokens only to the internal jobs the policy names, with the job as subject', async () => {
    const job = await selfSignedExchange(await selfSigned());
    assert.equal(job.status, 200, JSON.stringify(job.body));
    const claims = decodeJwt(String(job.body.access_token));
    assert.equal(claims.sub, workloads['nightly-job']?.spiffeId);
    assert.equal(claims.req_wl, workloads['nightly-job']?.spiffeId);
    assert.equal(claims.scope, 'reports:run');
    assert.deepEqual(claims.tctx, { roles: [] });
    assert.deepEqual(claims.rctx, { authn: 'workload' });
    const gateway = await exchange('gateway', base(await selfSigned(), TOKEN_TYPE.selfSigned, 'reports:run'));
    assert.deepEqual([gateway.status, gateway.body.error], [400, 'unauthorized_client']);
  });

  it('refuses malformed exchanges: no SVID, wrong grant, token type or audience, repeated parameters', async () => {
    const subjectToken = await accessToken();
    const anonymous = await exchange(null, base(subjectToken));
    assert.deepEqual([anonymous.status, anonymous.body.error], [401, 'LOCKSTEP_CP_PEER_UNAUTHENTICATED']);
    assert.equal(
      (await exchange('gateway', { ...base(subjectToken), grant_type: 'client_credentials' })).body.error,
      'unsupported_grant_type',
    );
    assert.equal(
      (await exchange('gateway', { ...base(subjectToken), requested_token_type: TOKEN_TYPE.accessToken })).body.error,
      'invalid_request',
    );
    assert.equal(
      (await exchange('gateway', { ...base(subjectToken), audience: 'evil.test' })).body.error,
      'invalid_target',
    );
    assert.equal(
      (await exchange('gateway', { ...base(subjectToken), subject_token_type: 'urn:x' })).body.error,
      'invalid_request',
    );
    const twice = await exchange('gateway', {}, `${new URLSearchParams(base(subjectToken)).toString()}&audience=${TD}`);
    assert.deepEqual([twice.status, twice.body.error], [400, 'LOCKSTEP_CP_REQUEST_INVALID']);
  });
});

describe('Txn-Token Service: scope (draft -10 §11.1, §13.6)', () => {
  it('refuses an exchange without scope (REQUIRED) and a scope that is not RFC 6749 scope tokens', async () => {
    const { scope: _scope, ...withoutScope } = base(await accessToken());
    const missing = await exchange('gateway', withoutScope);
    assert.deepEqual([missing.status, missing.body.error], [400, 'invalid_request']);
    assert.match(String(missing.body.error_description), /scope is required/);
    const empty = await exchange('gateway', { ...withoutScope, scope: '' });
    assert.deepEqual([empty.status, empty.body.error], [400, 'invalid_request']);
    for (const scope of ['orders:read  orders:create', ' orders:read', 'orders:read ', 'orders:"read"']) {
      const malformed = await exchange('gateway', { ...withoutScope, scope });
      assert.deepEqual([malformed.status, malformed.body.error], [400, 'invalid_scope'], JSON.stringify(scope));
    }
  });

  it("issues the scope asked for, narrower than the access token's", async () => {
    const token = await txnTokenFor(
      'gateway',
      base(await accessToken(), TOKEN_TYPE.accessToken, 'orders:create orders:create'),
    );
    assert.equal(decodeJwt(token).scope, 'orders:create');
  });

  it('never widens the scope on a replacement', async () => {
    const first = await gatewayToken('orders:create');
    const wider = await replace('orders', first, 'orders:create orders:read');
    assert.deepEqual([wider.status, wider.body.error], [400, 'invalid_scope']);
    assert.match(String(wider.body.error_description), /orders:read is not in the subject token's scope/);
    const both = await gatewayToken('orders:create orders:read');
    const narrower = await txnTokenFor('orders', base(both, TOKEN_TYPE.txnToken, 'orders:read'));
    assert.equal(decodeJwt(narrower).scope, 'orders:read');
  });
});

describe('Txn-Token Service: replacement (draft -10 §13.15)', () => {
  it('keeps txn, sub, aud, tctx and rctx, keeps the requester chain, and never outlives the token it replaces', async () => {
    const first = await gatewayToken();
    const request_context = JSON.stringify({ req_ip: '198.51.100.1' });
    const replaced = await txnTokenFor('orders', {
      ...base(first, TOKEN_TYPE.txnToken, 'orders:create'),
      request_context,
    });
    const [before, after] = [decodeJwt(first), decodeJwt(replaced)];
    for (const claim of ['txn', 'sub', 'aud', 'tctx', 'rctx', 'scope'])
      assert.deepEqual(after[claim], before[claim], claim);
    assert.deepEqual(after.rctx, { req_ip: '203.0.113.7', authn: 'pwd' }, "the originating request's context");
    assert.equal(before.req_wl, workloads.gateway?.spiffeId);
    assert.equal(before.req_wl_chain, undefined);
    assert.equal(after.req_wl, workloads.orders?.spiffeId, 'req_wl stays a string naming who asked (§9.2)');
    assert.deepEqual(after.req_wl_chain, [workloads.gateway?.spiffeId]);
    assert.ok((after.exp as number) <= (before.exp as number));

    const twice = decodeJwt(await txnTokenFor('gateway', base(replaced, TOKEN_TYPE.txnToken, 'orders:create')));
    assert.equal(twice.txn, before.txn);
    assert.equal(twice.req_wl, workloads.gateway?.spiffeId);
    assert.deepEqual(twice.req_wl_chain, [workloads.gateway?.spiffeId, workloads.orders?.spiffeId]);
  });

  it("gateway → orders → inventory: the shop's inventory policy admits orders' replaced tokens", async () => {
    assert.equal(MAX_TXN_TOKEN_REPLACEMENTS, GUARD_MAX_REPLACEMENTS, 'the TTS and the guard cap replacements alike');
    const { bundle, keys } = await shopBundle('inventory');
    const inventory = await guarded('inventory', bundle, keys, { 'POST /reserve': 'inventory:reserve' });
    try {
      const first = await gatewayToken();
      let token = await txnTokenFor('orders', base(first, TOKEN_TYPE.txnToken, 'orders:create'));
      assert.equal((await call('orders', `${inventory.url}/reserve`, token, 'POST')).status, 200, 'one replacement');
      for (let replacements = 2; replacements <= MAX_TXN_TOKEN_REPLACEMENTS; replacements++) {
        token = await txnTokenFor('orders', base(token, TOKEN_TYPE.txnToken, 'orders:create'));
      }
      assert.equal((decodeJwt(token).req_wl_chain as string[]).length, MAX_TXN_TOKEN_REPLACEMENTS);
      const reserved = await call('orders', `${inventory.url}/reserve`, token, 'POST');
      assert.equal(reserved.status, 200, `${MAX_TXN_TOKEN_REPLACEMENTS} replacements`);

      // What inventory decides on is where the transaction started: signed alike, a token naming orders
      // as its only requester (what a replacement used to carry) is denied, the same one with the chain is not.
      const now = Math.floor(Date.now() / 1000);
      const claims = {
        txn: 'txn-chain',
        scope: 'orders:create',
        req_wl: workloads.orders?.spiffeId,
        tctx: { roles: ['customer'] },
      };
      const signed = (extra: Record<string, unknown>) => txnTokenSigned({ ...claims, ...extra }, now, now + 60);
      const overwritten = await call('orders', `${inventory.url}/reserve`, await signed({}), 'POST');
      assert.deepEqual([overwritten.status, overwritten.body.error], [403, 'LOCKSTEP_ERR_DENIED']);
      const chained = await signed({ req_wl_chain: [workloads.gateway?.spiffeId] });
      assert.equal((await call('orders', `${inventory.url}/reserve`, chained, 'POST')).status, 200);
      const payments = await call('payments', `${inventory.url}/reserve`, token, 'POST');
      assert.deepEqual(
        [payments.status, payments.body.error],
        [403, 'LOCKSTEP_ERR_DENIED'],
        'the caller is still the principal',
      );
    } finally {
      await inventory.close();
    }
  });

  it(`caps replacements at ${MAX_TXN_TOKEN_REPLACEMENTS}: the next one is invalid_grant`, async () => {
    let token = await gatewayToken();
    for (let i = 0; i < MAX_TXN_TOKEN_REPLACEMENTS; i++) {
      token = await txnTokenFor(i % 2 === 0 ? 'orders' : 'gateway', base(token, TOKEN_TYPE.txnToken, 'orders:create'));
    }
    const beyond = await replace('orders', token);
    assert.deepEqual([beyond.status, beyond.body.error], [400, 'invalid_grant']);
    assert.match(String(beyond.body.error_description), /replaced 8 times, the most allowed/);
  });

  it('refuses to replace a token whose transaction is revoked', async () => {
    const doomed = await gatewayToken();
    const other = await gatewayToken();
    await controlPlane.revoke({ kind: 'txn', value: String(decodeJwt(doomed).txn), reason: 'test', actor: 'test' });
    const refused = await replace('orders', doomed);
    assert.deepEqual([refused.status, refused.body.error], [400, 'invalid_grant']);
    assert.match(String(refused.body.error_description), /the transaction .* is revoked/);
    assert.equal(
      (await replace('orders', other)).status,
      200,
      'another transaction of the same user still is replaced',
    );
  });

  it('refuses to replace an expired Txn-Token (no clock tolerance), a forged one and one without req_wl', async () => {
    const now = Math.floor(Date.now() / 1000);
    const claims = {
      txn: 'txn-old',
      scope: 'orders:create',
      req_wl: workloads.gateway?.spiffeId,
      tctx: { roles: ['customer'] },
    };
    const sign = (iat: number, exp: number, key?: CryptoKey) => txnTokenSigned(claims, iat, exp, key);
    const expired = await replace('orders', await sign(now - 300, now - 5));
    assert.deepEqual([expired.status, expired.body.error], [400, 'invalid_grant']);
    assert.match(String(expired.body.error_description), /has expired/);
    const forged = await replace('orders', await sign(now, now + 60, strangerKey));
    assert.deepEqual([forged.status, forged.body.error], [400, 'invalid_grant']);
    assert.equal((await replace('orders', await sign(now, now + 60))).status, 200, 'the same token signed by the TTS');
    const { req_wl: _requester, ...withoutRequester } = claims;
    const noRequester = await txnTokenSigned(withoutRequester, now, now + 60);
    assert.equal((await replace('orders', noRequester)).body.error, 'invalid_grant', 'no req_wl: no Txn-Token');
  });
});

describe('Txn-Token Service: self-signed subject tokens (draft -10 §11.2.1)', () => {
  it("refuses a self-signed token that is malformed, stale, not the requester's, or acts for someone else", async () => {
    const now = Math.floor(Date.now() / 1000);
    const cases: [string, Promise<string>][] = [
      ['not a JWT', Promise.resolve('not-a-jwt')],
      ["signed by a key that is not the requester's SVID key", selfSigned({ key: strangerKey })],
      ["signed by another workload's SVID key", selfSigned({ key: createPrivateKey(workloads.gateway?.keyPem ?? '') })],
      ['iss another workload', selfSigned({ iss: workloads.gateway?.spiffeId ?? '' })],
      ['sub a user: a job acts only as itself', selfSigned({ sub: 'alice' })],
      ['aud the trust domain, not the TTS', selfSigned({ aud: TD })],
      ['aud the TTS among others', selfSigned({ aud: [TTS_ID, 'https://elsewhere.example'] })],
      ['exp passed', selfSigned({ iat: now - 120, exp: now - 60 })],
      ['iat ten minutes old', selfSigned({ iat: now - 600, exp: now + 60 })],
      ['iat in the future', selfSigned({ iat: now + 120, exp: now + 180 })],
      ['an hour to live', selfSigned({ iat: now, exp: now + 3600 })],
      ['no scope: unknown scope is never unconstrained (§13.14)', selfSigned({ scope: null })],
      ['a scope that is not RFC 6749 scope tokens', selfSigned({ scope: 'reports:run  reports:read' })],
    ];
    for (const [what, token] of cases) {
      const answer = await selfSignedExchange(await token);
      assert.deepEqual(
        [answer.status, answer.body.error],
        [400, 'invalid_grant'],
        `${what}: ${JSON.stringify(answer.body)}`,
      );
    }
  });

  it('grants at most the scope the self-signed token states, and only to the workload that signed it', async () => {
    const wider = await selfSignedExchange(await selfSigned({ scope: 'reports:run' }), 'reports:run reports:delete');
    assert.deepEqual([wider.status, wider.body.error], [400, 'invalid_scope']);
    const narrower = await selfSignedExchange(await selfSigned({ scope: 'reports:run reports:read' }), 'reports:read');
    assert.equal(decodeJwt(String(narrower.body.access_token)).scope, 'reports:read');
    // Replayed by another job the policy lets exchange self-signed tokens: not its key, not its name.
    const replayed = await selfSignedExchange(await selfSigned(), 'reports:run', 'cleanup-job');
    assert.deepEqual([replayed.status, replayed.body.error], [400, 'invalid_grant']);
    assert.match(String(replayed.body.error_description), /does not verify with the key of the requester's SVID/);
  });
});

/** The public half of a scanner's key, as the scan kit reads it from the scanner's CSR. */
async function scannerPublicJwk(): Promise<JWK> {
  return exportJWK((await generateKeyPair('ES256', { extractable: true })).publicKey);
}

describe("Txn-Token Service: the scanner's test tokens under draft -10", () => {
  it('a guard admits the genuine ones and refuses each defective one for its own reason', async () => {
    const scanner = `spiffe://${TD}/scanner/ci`;
    const users = [{ sub: 'alice', roles: ['customer'] }];
    const kit = await tts.scanTokens({
      scanner,
      users,
      revokedSub: 'revoked-user',
      revokedTxn: 'revoked-txn',
      scannerKey: await scannerPublicJwk(),
    });
    const policyKey = await openSigningKey(join(scratch, 'keys'), 'policy');
    const bundle = (await policy.bundleFor('orders'))?.bundle ?? '';
    const orders = await guarded(
      'orders',
      bundle,
      { keys: [policyKey.publicJwk] },
      { 'GET /orders/:id': 'orders:read' },
    );
    try {
      const [user] = kit.users;
      assert.equal(decodeJwt(user ?? '').scope, 'lockstep:scan');
      // The scanner's own SVID, from the control plane's CA, as the scan kit issues it.
      const signer = { cert: ca.signer.cert, privateKey: ca.signer.privateKey, chainBelowRoot: [ca.intermediatePem] };
      const issued = await issueCertificate(signer, { uris: [scanner] });
      const asScanner = { cert: issued.chainPem, key: issued.keyPem };
      const probeAs = { 'lockstep-probe-as': workloads.gateway?.spiffeId ?? '' };
      const genuine = await callWith(asScanner, `${orders.url}/orders/1`, user ?? '', 'GET', probeAs);
      assert.equal(
        genuine.status,
        200,
        `a genuine scan token passes the token checks: ${JSON.stringify(genuine.body)}`,
      );
      assert.equal(genuine.headers['lockstep-probe'], 'admitted');
      const replayed = await call('gateway', `${orders.url}/orders/1`, user ?? '');
      assert.equal(replayed.status, 401, 'a workload that received a probe cannot replay its token');
      const expected: Record<string, string> = {
        expired: 'EXPIRED',
        'not-yet-valid': 'CLAIMS',
        'issued-in-future': 'CLAIMS',
        'no-exp': 'CLAIMS',
        'lifetime-over-max': 'CLAIMS',
        'foreign-audience': 'CLAIMS',
        'audience-array': 'CLAIMS',
        'typ-access-token': 'CLAIMS',
        'typ-plain-jwt': 'CLAIMS',
        'typ-id-token': 'CLAIMS',
        'nul-in-claims': 'CLAIMS',
        'duplicate-claims': 'MALFORMED',
        'revoked-sub': 'REVOKED',
        'revoked-txn': 'REVOKED',
        'no-txn': 'CLAIMS',
        'crit-unknown': 'INVALID',
        'b64-false': 'INVALID',
        'scope-missing': 'CLAIMS',
        'req-wl-missing': 'CLAIMS',
        'roles-string': 'CLAIMS',
        'tctx-proto-key': 'CLAIMS',
      };
      assert.deepEqual(Object.keys(kit.defective).sort(), Object.keys(expected).sort());
      orders.guard.revoke({ kind: 'sub', value: 'revoked-user' });
      orders.guard.revoke({ kind: 'txn', value: 'revoked-txn' });
      for (const [name, token] of Object.entries(kit.defective)) {
        const answer = await callWith(asScanner, `${orders.url}/orders/1`, token, 'GET', probeAs);
        assert.deepEqual([answer.status, answer.body.error], [401, `LOCKSTEP_ERR_TXN_TOKEN_${expected[name]}`], name);
      }
    } finally {
      await orders.close();
    }
  });
});

describe('Txn-Token Service: a replaced token is held to exactly what a guard accepts', () => {
  const now = () => Math.floor(Date.now() / 1000);
  const claims = () => ({
    sub: 'alice',
    aud: TD,
    iat: now(),
    exp: now() + 60,
    txn: `txn-${Math.random().toString(36).slice(2)}`,
    scope: 'orders:read',
    req_wl: workloads.gateway?.spiffeId,
    tctx: { roles: ['customer'] },
  });
  /** Claims as JSON text signed with the TTS's own key: what JSON.stringify cannot write can be. */
  const signedText = (text: string, header: Record<string, unknown> = {}) =>
    new CompactSign(new TextEncoder().encode(text))
      .setProtectedHeader({ alg: 'ES256', typ: 'txntoken+jwt', kid: txnSigningKey.kid, ...header })
      .sign(txnSigningKey.privateKey);
  const signed = (extra: Record<string, unknown>, header?: Record<string, unknown>) =>
    signedText(JSON.stringify({ ...claims(), ...extra }), header);
  const withProtoKey = () => JSON.stringify(claims()).replace('"tctx":{', '"tctx":{"__proto__":{"roles":["admin"]},');

  it("a token signed with the TTS's key that a guard refuses is not replaced either; one it takes is", async () => {
    const defective: [string, Promise<string>][] = [
      ['tctx.roles a string (a guard refuses, never coerces)', signed({ tctx: { roles: 'admin' } })],
      ['a __proto__ key in tctx', signedText(withProtoKey())],
      ['a claim named twice', signedText(JSON.stringify(claims()).replace(/^\{/, '{"sub":"ceo",'))],
      ['a control character in sub', signed({ sub: 'alice\u0000admin' })],
      ['aud an array holding the trust domain', signed({ aud: [TD, 'other.test'] })],
      ['a lifetime of an hour', signed({ exp: now() + 3_600 })],
      ['iat an hour ahead', signed({ iat: now() + 3_600, exp: now() + 3_660 })],
      ['req_wl not a SPIFFE ID', signed({ req_wl: 'gateway' })],
      ['req_wl of another trust domain', signed({ req_wl: 'spiffe://evil.test/svc/gateway' })],
      ['a header parameter a guard does not take', signed({}, { jku: 'https://evil.example/jwks.json' })],
    ];
    const policyKey = await openSigningKey(join(scratch, 'keys'), 'policy');
    const bundle = (await policy.bundleFor('orders'))?.bundle ?? '';
    const routes = { 'GET /orders/:id': 'orders:read' };
    const orders = await guarded('orders', bundle, { keys: [policyKey.publicJwk] }, routes);
    try {
      const control = await signed({});
      assert.equal((await call('gateway', `${orders.url}/orders/1`, control)).status, 200, 'a guard takes the control');
      assert.equal((await replace('orders', control, 'orders:read')).status, 200, 'and the TTS replaces it');
      for (const [what, pending] of defective) {
        const token = await pending;
        const atGuard = await call('gateway', `${orders.url}/orders/1`, token);
        assert.equal(atGuard.status, 401, `a guard refuses ${what}: ${JSON.stringify(atGuard.body)}`);
        const replaced = await replace('orders', token, 'orders:read');
        const answer = JSON.stringify(replaced.body);
        assert.deepEqual([replaced.status, replaced.body.error], [400, 'invalid_grant'], `${what}: ${answer}`);
        const refusal = /^the Txn-Token to replace .*a guard (refuses|takes only)/;
        assert.match(String(replaced.body.error_description), refusal);
      }
    } finally {
      await orders.close();
    }
  });
});

describe('Txn-Token Service: a revoked signing key (kid) signs nothing more', () => {
  const RING_KID = 'idp-ring';
  const ADMIN = `spiffe://${TD}/admin/ops`;
  let ringIdp: CryptoKey;
  let ringPlane: RunningControlPlane;
  let ring: Awaited<ReturnType<typeof openKeyRing>>;
  const at = (as: string, fields: Record<string, string>) => exchangeAt(ringPlane.url, as, fields);
  const replaceAt = (token: string, scope: string) => at('orders', base(token, TOKEN_TYPE.txnToken, scope));
  const issueAt = async () => {
    const answer = await at('gateway', base(await accessToken(), TOKEN_TYPE.accessToken, 'orders:create'));
    assert.equal(answer.status, 200, JSON.stringify(answer.body));
    return String(answer.body.access_token);
  };

  before(async () => {
    // A second TTS on the same CA and store, signing with a rotating key ring; its identity provider has a second key.
    ring = await openKeyRing(join(scratch, 'keys'), 'txn-token-ring', { retainMs: 3_600_000 });
    const idp = await generateKeyPair('ES256');
    ringIdp = idp.privateKey;
    const ringIdpJwk = { ...(await exportJWK(idp.publicKey)), kid: RING_KID, alg: 'ES256' };
    const issuer = { issuer: IDP, jwks: { keys: [...idpJwks.keys, ringIdpJwk] }, audience: GATEWAY_RESOURCE };
    const txnTokenKeys = () => ring.publicJwks();
    const subjects = createSubjectVerifier({ issuers: [issuer], txnTokenKeys, trustDomain: TD });
    const isRevoked = (kind: TokenRevocationKind, value: string) => store.isRevoked(kind, value);
    const ringTts = createTxnTokenService({ trustDomain: TD, keys: ring, subjects, isRevoked });
    ringPlane = await startControlPlane({ ca, store, policy, tts: ringTts });
  });
  after(async () => {
    await ringPlane.close();
  });

  it('refuses to replace a token of a retired key once its kid is revoked, issued or forged with it', async () => {
    const honest = await issueAt();
    const stolen = ring.current();
    const now = Math.floor(Date.now() / 1000);
    const claims = {
      txn: 'forged-1',
      scope: 'orders:read orders:create',
      req_wl: workloads.gateway?.spiffeId,
      tctx: { roles: ['admin'], tenant: 'acme' },
    };
    const forged = await new SignJWT(claims)
      .setProtectedHeader({ alg: 'ES256', typ: 'txntoken+jwt', kid: stolen.kid })
      .setSubject('ceo')
      .setAudience(TD)
      .setIssuedAt(now)
      .setExpirationTime(now + 300)
      .sign(stolen.privateKey);
    await ring.rotate();
    assert.ok(
      ring.publicJwks().keys.some((key) => key.kid === stolen.kid),
      'the retired key is still published',
    );
    const beforeRevocation = await replaceAt(honest, 'orders:create');
    assert.equal(beforeRevocation.status, 200, 'a rotation alone retires the key, it does not revoke it');

    await ringPlane.revoke({ kind: 'kid', value: stolen.kid, reason: 'key compromise', actor: ADMIN });
    const signedByTheRevokedKey = [
      ['forged', forged, 'orders:read'],
      ['issued', honest, 'orders:create'],
    ] as const;
    for (const [what, token, scope] of signedByTheRevokedKey) {
      const refused = await replaceAt(token, scope);
      const answer = JSON.stringify(refused.body);
      assert.deepEqual([refused.status, refused.body.error], [400, 'invalid_grant'], `${what}: ${answer}`);
      const description = `the subject token is signed with key ${stolen.kid}, which is revoked`;
      assert.equal(String(refused.body.error_description), description);
    }
    const current = await issueAt();
    assert.notEqual(decodeProtectedHeader(current).kid, stolen.kid);
    assert.equal((await replaceAt(current, 'orders:create')).status, 200, "the current key's tokens are replaced");
  });

  it('refuses an access token signed with a revoked identity-provider key', async () => {
    const token = await accessToken({ key: ringIdp, kid: RING_KID });
    assert.equal((await at('gateway', base(token))).status, 200, 'before the revocation');
    await ringPlane.revoke({ kind: 'kid', value: RING_KID, reason: 'key compromise', actor: ADMIN });
    const refused = await at('gateway', base(token));
    assert.deepEqual([refused.status, refused.body.error], [400, 'invalid_grant'], JSON.stringify(refused.body));
    assert.match(String(refused.body.error_description), /signed with key idp-ring, which is revoked/);
    assert.equal((await at('gateway', base(await accessToken()))).status, 200, "the identity provider's other key");
  });
});

describe("Txn-Token Service: a scanner's test token never leaves the scan", () => {
  it('refuses to replace a token whose req_wl or req_wl_chain names a scanner identity', async () => {
    const scanner = `spiffe://${TD}/scanner/ci`;
    const users = [{ sub: 'alice', roles: ['admin'] }];
    const kit = await tts.scanTokens({
      scanner,
      users,
      revokedSub: 'scan-revoked',
      revokedTxn: 'scan-revoked-txn',
      scannerKey: await scannerPublicJwk(),
    });
    const now = Math.floor(Date.now() / 1000);
    const claims = {
      txn: 'scan-chain',
      scope: 'lockstep:scan',
      req_wl: workloads.gateway?.spiffeId,
      req_wl_chain: [scanner],
      tctx: { roles: ['admin'] },
    };
    const chained = await txnTokenSigned(claims, now, now + 60);
    for (const [what, token] of [
      ['req_wl', kit.users[0] ?? ''],
      ['req_wl_chain', chained],
    ] as const) {
      const refused = await replace('orders', token, 'lockstep:scan');
      const answer = JSON.stringify(refused.body);
      assert.deepEqual([refused.status, refused.body.error], [400, 'invalid_grant'], `${what}: ${answer}`);
      const refusal = /names the scanner spiffe:\/\/shop\.test\/scanner\/ci as a requester/;
      assert.match(String(refused.body.error_description), refusal);
    }
  });
});
