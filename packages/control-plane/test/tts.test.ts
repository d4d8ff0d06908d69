/**
 * The Txn-Token Service over real mTLS: the gateway exchanges a user's access token for a Txn-Token
 * that a guarded service accepts; every bad exchange of the issue is refused with its OAuth error.
 */
import assert from 'node:assert/strict';
import { cpSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import Fastify, { type FastifyInstance } from 'fastify';
import { SignJWT, decodeJwt, decodeProtectedHeader, exportJWK, generateKeyPair, type CryptoKey, type JSONWebKeySet } from 'jose';
import { Agent, request } from 'undici';
import { createGuard, type Guard } from '@lockstep/guard';
import { lockstep } from '@lockstep/guard/fastify';
import {
  createJoinToken, createPolicyService, createSubjectVerifier, createTxnTokenService, singleKey, joinControlPlane, openSigningKey, openSqliteStore, openWorkloadCa,
  startControlPlane, TOKEN_EXCHANGE_GRANT, TOKEN_TYPE,
  type ControlPlaneStore, type PolicyService, type RunningControlPlane, type TxnTokenService, type WorkloadCa, type WorkloadCredentials,
} from '../src/index.ts';

const TD = 'shop.test';
const IDP = 'https://idp.shop.test';
const GATEWAY_RESOURCE = 'https://gateway.shop.test';
const scratch = mkdtempSync(join(tmpdir(), 'lockstep-tts-'));
const policyDir = join(scratch, 'policies');

let ca: WorkloadCa;
let store: ControlPlaneStore;
let policy: PolicyService;
let tts: TxnTokenService;
let controlPlane: RunningControlPlane;
let idpKey: CryptoKey;
let strangerKey: CryptoKey;
const workloads: Record<string, WorkloadCredentials> = {};

before(async () => {
  cpSync(new URL('../../guard/example/policies/', import.meta.url), policyDir, { recursive: true });
  writeFileSync(join(policyDir, 'tts.cedar'), `
@id("gateway-exchanges-user-tokens")
permit (principal == Lockstep::Workload::"spiffe://shop.test/svc/gateway", action == Lockstep::Action::"tts:exchange:access_token", resource == Lockstep::Service::"tts");
@id("gateway-replaces-txn-tokens")
permit (principal == Lockstep::Workload::"spiffe://shop.test/svc/gateway", action == Lockstep::Action::"tts:exchange:txn_token", resource == Lockstep::Service::"tts");
@id("nightly-job-self-signed")
permit (principal == Lockstep::Workload::"spiffe://shop.test/svc/nightly-job", action == Lockstep::Action::"tts:exchange:self_signed", resource == Lockstep::Service::"tts");
`);
  ca = await openWorkloadCa({ trustDomain: TD, keyDir: join(scratch, 'keys') });
  store = openSqliteStore(':memory:');
  policy = await createPolicyService({ dir: policyDir, signingKey: await openSigningKey(join(scratch, 'keys'), 'policy'), watch: false });
  const idp = await generateKeyPair('ES256');
  idpKey = idp.privateKey;
  strangerKey = (await generateKeyPair('ES256')).privateKey;
  const idpJwks: JSONWebKeySet = { keys: [{ ...(await exportJWK(idp.publicKey)), kid: 'idp-1', alg: 'ES256' }] };
  const signingKey = await openSigningKey(join(scratch, 'keys'), 'txn-token');
  const subjects = createSubjectVerifier({ issuers: [{ issuer: IDP, jwks: idpJwks, audience: GATEWAY_RESOURCE }], txnTokenKeys: () => tts.jwks, trustDomain: TD });
  tts = createTxnTokenService({ trustDomain: TD, keys: singleKey(signingKey), subjects });
  controlPlane = await startControlPlane({ ca, store, policy, tts });
  for (const service of ['gateway', 'orders', 'nightly-job']) {
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

interface AccessTokenOptions { typ?: string; iss?: string; aud?: string; scope?: string; expiresIn?: number; key?: CryptoKey }
function accessToken(options: AccessTokenOptions = {}): Promise<string> {
  const now = Math.floor(Date.now() / 1000);
  return new SignJWT({ scope: options.scope ?? 'orders:read orders:create', roles: ['customer'], tenant: 'acme', amr: ['pwd'] })
    .setProtectedHeader({ alg: 'ES256', typ: options.typ ?? 'at+jwt', kid: 'idp-1' })
    .setIssuer(options.iss ?? IDP).setAudience(options.aud ?? GATEWAY_RESOURCE).setSubject('alice')
    .setIssuedAt(now - 10).setExpirationTime(now + (options.expiresIn ?? 3600))
    .sign(options.key ?? idpKey);
}

async function exchange(as: string | null, fields: Record<string, string>, raw?: string) {
  const credentials = as === null ? {} : { cert: workloads[as]?.chainPem, key: workloads[as]?.keyPem };
  const agent = new Agent({ connect: { ca: ca.bundlePem, ...credentials, checkServerIdentity: () => undefined } });
  try {
    const response = await request(`${controlPlane.url}/v1/token`, {
      method: 'POST', dispatcher: agent, headers: { 'content-type': 'application/x-www-form-urlencoded' }, body: raw ?? new URLSearchParams(fields).toString(),
    });
    return { status: response.statusCode, body: await response.body.json() as Record<string, string | number> };
  } finally {
    await agent.close();
  }
}

const base = (subjectToken: string, subjectTokenType: string = TOKEN_TYPE.accessToken) => ({
  grant_type: TOKEN_EXCHANGE_GRANT, requested_token_type: TOKEN_TYPE.txnToken, audience: TD, subject_token: subjectToken, subject_token_type: subjectTokenType,
});

describe('Txn-Token Service', () => {
  it('exchanges the gateway\'s user access token for a Txn-Token that a guarded service accepts', async () => {
    const answer = await exchange('gateway', { ...base(await accessToken()), scope: 'orders:read', request_context: JSON.stringify({ req_ip: '203.0.113.7' }) });
    assert.equal(answer.status, 200, JSON.stringify(answer.body));
    assert.equal(answer.body.issued_token_type, TOKEN_TYPE.txnToken);
    assert.equal(answer.body.token_type, 'N_A');
    assert.ok(!('refresh_token' in answer.body));
    const token = String(answer.body.access_token);
    assert.deepEqual({ ...decodeProtectedHeader(token) }, { alg: 'ES256', typ: 'txntoken+jwt', kid: tts.jwks.keys[0]?.kid });
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
      service: 'orders', trustDomain: TD, trustBundle: ca.bundlePem, svid: { cert: workloads.orders?.chainPem ?? '', key: workloads.orders?.keyPem ?? '' },
      txnTokenKeys: { jwks: tts.jwks }, policy: { keys: { keys: [(await openSigningKey(join(scratch, 'keys'), 'policy')).publicJwk] }, bundle: (await policy.bundleFor('orders'))?.bundle ?? '' },
      logger: { info() {}, warn() {}, error() {} },
    });
    const app: FastifyInstance = Fastify({ https: guard.tlsOptions() });
    await app.register(lockstep, { guard });
    app.get('/orders/:id', { config: { lockstep: { action: 'orders:read' } } }, async () => ({ ok: true }));
    await app.listen({ host: '127.0.0.1', port: 0 });
    const agent = new Agent({ connect: { cert: workloads.gateway?.chainPem, key: workloads.gateway?.keyPem, ca: ca.bundlePem, checkServerIdentity: () => undefined } });
    try {
      const response = await request(`https://127.0.0.1:${(app.server.address() as { port: number }).port}/orders/7`, { dispatcher: agent, headers: { 'txn-token': token } });
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
    const answer = await exchange('gateway', { ...base(await accessToken({ scope: 'orders:read' })), scope: 'orders:read orders:delete' });
    assert.deepEqual([answer.status, answer.body.error], [400, 'invalid_scope']);
  });

  it('lets only allowed workloads replace a Txn-Token, and a replacement keeps its txn', async () => {
    const first = String((await exchange('gateway', base(await accessToken()))).body.access_token);
    const byOrders = await exchange('orders', base(first, TOKEN_TYPE.txnToken));
    assert.deepEqual([byOrders.status, byOrders.body.error], [400, 'unauthorized_client']);
    const replaced = await exchange('gateway', base(first, TOKEN_TYPE.txnToken));
    assert.equal(replaced.status, 200);
    assert.equal(decodeJwt(String(replaced.body.access_token)).txn, decodeJwt(first).txn);
  });

  it('issues self-signed Txn-Tokens only to the internal jobs the policy names, with the job as subject', async () => {
    const job = await exchange('nightly-job', { ...base('', TOKEN_TYPE.selfSigned), subject_token: '' });
    assert.equal(job.status, 200, JSON.stringify(job.body));
    assert.equal(decodeJwt(String(job.body.access_token)).sub, workloads['nightly-job']?.spiffeId);
    const gateway = await exchange('gateway', base('', TOKEN_TYPE.selfSigned));
    assert.deepEqual([gateway.status, gateway.body.error], [400, 'unauthorized_client']);
  });

  it('refuses malformed exchanges: no SVID, wrong grant, token type or audience, repeated parameters', async () => {
    const subjectToken = await accessToken();
    const anonymous = await exchange(null, base(subjectToken));
    assert.deepEqual([anonymous.status, anonymous.body.error], [401, 'LOCKSTEP_CP_PEER_UNAUTHENTICATED']);
    assert.equal((await exchange('gateway', { ...base(subjectToken), grant_type: 'client_credentials' })).body.error, 'unsupported_grant_type');
    assert.equal((await exchange('gateway', { ...base(subjectToken), requested_token_type: TOKEN_TYPE.accessToken })).body.error, 'invalid_request');
    assert.equal((await exchange('gateway', { ...base(subjectToken), audience: 'evil.test' })).body.error, 'invalid_target');
    assert.equal((await exchange('gateway', { ...base(subjectToken), subject_token_type: 'urn:x' })).body.error, 'invalid_request');
    const twice = await exchange('gateway', {}, `${new URLSearchParams(base(subjectToken)).toString()}&audience=${TD}`);
    assert.deepEqual([twice.status, twice.body.error], [400, 'LOCKSTEP_CP_REQUEST_INVALID']);
  });
});
