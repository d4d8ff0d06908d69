/**
 * Txn-Tokens for outbound calls, from a real control plane over mTLS: a gateway's workload agent
 * exchanges a user's access token for a Txn-Token (`agent.txnToken`), and a guarded service that
 * joined the same way accepts it, its handler seeing on whose behalf it runs; a service narrows the
 * token it received (a replacement); a workload signs its own subject token for work it starts
 * itself, and calls a guarded service with `agent.request`, the server known by its SPIFFE ID;
 * refusals and a control plane that does not answer are told apart, since only the second is an outage.
 */
import assert from 'node:assert/strict';
import { cpSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import Fastify, { type FastifyInstance } from 'fastify';
import { decodeJwt, exportJWK, generateKeyPair, SignJWT, type CryptoKey } from 'jose';
import { Agent, request } from 'undici';
import { createGuard, currentAdmission, type Guard } from '@lockstep/guard';
import { lockstep } from '@lockstep/guard/fastify';
import {
  createJoinToken,
  createPolicyService,
  createSubjectVerifier,
  createTxnTokenService,
  openSigningKey,
  openSqliteStore,
  openWorkloadCa,
  singleKey,
  startControlPlane,
  type ControlPlaneStore,
  type PolicyService,
  type RunningControlPlane,
  type TxnTokenService,
  type WorkloadCa,
} from '@lockstep/control-plane';
import { controlPlaneAgent, joinAsWorkload, requestTxnToken, TxnTokenError, type WorkloadAgent } from '../src/index.ts';

const TD = 'shop.test';
const IDP = 'https://idp.shop.test';
const RESOURCE = 'https://gateway.shop.test';
const GATEWAY = `spiffe://${TD}/svc/gateway`;
const quiet = { info() {}, warn() {}, error() {} };
const scratch = mkdtempSync(join(tmpdir(), 'lockstep-txn-token-'));

let ca: WorkloadCa;
let store: ControlPlaneStore;
let policy: PolicyService;
let tts: TxnTokenService;
let controlPlane: RunningControlPlane;
let idpKey: CryptoKey;
let gateway: WorkloadAgent;
let orders: WorkloadAgent;
let guard: Guard;
let app: FastifyInstance;
let origin: string;

before(async () => {
  const policyDir = join(scratch, 'policies');
  cpSync(new URL('../../guard/example/policies/', import.meta.url), policyDir, { recursive: true });
  writeFileSync(
    join(policyDir, 'tts.cedar'),
    `
@id("gateway-exchanges-user-tokens")
permit (principal == Lockstep::Workload::"${GATEWAY}", action == Lockstep::Action::"tts:exchange:access_token", resource == Lockstep::Service::"tts");
@id("gateway-starts-its-own-work")
permit (principal == Lockstep::Workload::"${GATEWAY}", action == Lockstep::Action::"tts:exchange:self_signed", resource == Lockstep::Service::"tts");
@id("orders-replaces-txn-tokens")
permit (principal == Lockstep::Workload::"spiffe://${TD}/svc/orders", action == Lockstep::Action::"tts:exchange:txn_token", resource == Lockstep::Service::"tts");
`,
  );
  ca = await openWorkloadCa({ trustDomain: TD, keyDir: join(scratch, 'keys') });
  store = openSqliteStore(':memory:');
  const policyKey = await openSigningKey(join(scratch, 'keys'), 'policy');
  policy = await createPolicyService({ dir: policyDir, signingKey: policyKey, watch: false });
  const idp = await generateKeyPair('ES256');
  idpKey = idp.privateKey;
  const idpJwks = { keys: [{ ...(await exportJWK(idp.publicKey)), kid: 'idp-1', alg: 'ES256' }] };
  const subjects = createSubjectVerifier({
    issuers: [{ issuer: IDP, jwks: idpJwks, audience: RESOURCE }],
    txnTokenKeys: () => tts.jwks,
    trustDomain: TD,
  });
  tts = createTxnTokenService({
    trustDomain: TD,
    keys: singleKey(await openSigningKey(join(scratch, 'keys'), 'txn-token')),
    subjects,
    isRevoked: (kind, value) => store.isRevoked(kind, value),
  });
  controlPlane = await startControlPlane({ ca, store, policy, tts });
  const join_ = async (service: string) =>
    joinAsWorkload({
      url: controlPlane.url,
      trustDomain: TD,
      joinToken: (await createJoinToken(store, ca, { service, createdBy: 'cli' })).token,
      service,
    });
  gateway = await join_('gateway');
  orders = await join_('orders');
  // The service as the guide writes it: its Txn-Token keys are the control plane's JWKS, fetched by URL.
  guard = await createGuard({ ...orders.guardOptions({ auditSpoolDir: false }), logger: quiet });
  orders.attach(guard);
  app = Fastify({ https: guard.tlsOptions() });
  await app.register(lockstep, { guard });
  app.get('/orders/:id', { config: { lockstep: { action: 'orders:read' } } }, async () => ({
    onBehalfOf: currentAdmission()?.txn?.claims.sub,
  }));
  await app.listen({ host: '127.0.0.1', port: 0 });
  origin = `https://127.0.0.1:${(app.server.address() as { port: number }).port}`;
  for (let i = 0; i < 250 && guard.policyVersion === null; i++) await new Promise((resolve) => setTimeout(resolve, 20));
  assert.notEqual(guard.policyVersion, null, 'the guard has its policy');
});

after(async () => {
  await Promise.all([gateway.close(), orders.close()]);
  await app.close();
  await guard.close();
  await controlPlane.close();
  policy.close();
  await store.close();
  rmSync(scratch, { recursive: true, force: true });
});

function accessToken(options: { sub?: string; key?: CryptoKey } = {}): Promise<string> {
  const now = Math.floor(Date.now() / 1000);
  return new SignJWT({ scope: 'orders:read orders:create', roles: ['customer'], amr: ['pwd'] })
    .setProtectedHeader({ alg: 'ES256', typ: 'at+jwt', kid: 'idp-1' })
    .setIssuer(IDP)
    .setAudience(RESOURCE)
    .setSubject(options.sub ?? 'alice')
    .setIssuedAt(now - 10)
    .setExpirationTime(now + 600)
    .sign(options.key ?? idpKey);
}

/** A call to orders as the gateway (its SVID) with `txnToken`. */
async function callOrders(txnToken: string): Promise<{ status: number; body: Record<string, unknown> }> {
  const { chainPem, keyPem, bundlePem } = gateway.credentials;
  const client = new Agent({
    connect: { cert: chainPem, key: keyPem, ca: bundlePem, checkServerIdentity: () => undefined },
  });
  try {
    const response = await request(`${origin}/orders/1`, { dispatcher: client, headers: { 'txn-token': txnToken } });
    return { status: response.statusCode, body: (await response.body.json()) as Record<string, unknown> };
  } finally {
    await client.close();
  }
}

/** A port on loopback where nothing listens. */
async function deadPort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as { port: number };
  await new Promise((resolve) => server.close(resolve));
  return port;
}

describe('agent.txnToken', () => {
  it("exchanges a user's access token for a Txn-Token that a guarded service accepts, on the user's behalf", async () => {
    const token = await gateway.txnToken({
      subjectToken: await accessToken(),
      subjectTokenType: 'access_token',
      scope: 'orders:read',
      clientIp: '203.0.113.7',
    });
    const claims = decodeJwt(token);
    assert.equal(claims.sub, 'alice');
    assert.equal(claims.scope, 'orders:read', 'as narrow as the call');
    assert.equal(claims.req_wl, GATEWAY, 'the requester is the workload whose SVID made the exchange');
    assert.deepEqual(claims.rctx, { req_ip: '203.0.113.7', authn: 'pwd' });
    assert.deepEqual(await callOrders(token), { status: 200, body: { onBehalfOf: 'alice' } });
  });

  it('narrows a Txn-Token it received: a replacement keeps the transaction and names the chain', async () => {
    const first = await gateway.txnToken({
      subjectToken: await accessToken(),
      subjectTokenType: 'access_token',
      scope: 'orders:read orders:create',
    });
    const replaced = decodeJwt(
      await orders.txnToken({ subjectToken: first, subjectTokenType: 'txn_token', scope: 'orders:read' }),
    );
    assert.equal(replaced.txn, decodeJwt(first).txn);
    assert.equal(replaced.sub, 'alice');
    assert.equal(replaced.scope, 'orders:read');
    assert.equal(replaced.req_wl, `spiffe://${TD}/svc/orders`);
    assert.deepEqual(replaced.req_wl_chain, [GATEWAY]);
  });

  it("is refused with the service's OAuth error: a forged access token, a revoked user, a workload the policy does not permit", async () => {
    const forged = await accessToken({ key: (await generateKeyPair('ES256')).privateKey });
    const refusedWith = (error: string) => (thrown: unknown) =>
      thrown instanceof TxnTokenError &&
      thrown.code === 'LOCKSTEP_TXN_TOKEN_REFUSED' &&
      thrown.error === error &&
      thrown.status === 400;
    await assert.rejects(
      gateway.txnToken({ subjectToken: forged, subjectTokenType: 'access_token', scope: 'orders:read' }),
      refusedWith('invalid_grant'),
    );
    await assert.rejects(
      orders.txnToken({ subjectToken: await accessToken(), subjectTokenType: 'access_token', scope: 'orders:read' }),
      refusedWith('unauthorized_client'),
    );
    // Another user than the other tests': the guard learns of the revocation too.
    await store.addRevocation({ kind: 'sub', value: 'mallory', reason: 'test', actor: 'test', at: Date.now() });
    await assert.rejects(
      gateway.txnToken({
        subjectToken: await accessToken({ sub: 'mallory' }),
        subjectTokenType: 'access_token',
        scope: 'orders:read',
      }),
      refusedWith('invalid_grant'),
    );
  });

  it('says the control plane did not answer (the one outage) when nothing listens, or the deadline passes', async () => {
    const { chainPem, keyPem, bundlePem } = gateway.credentials;
    const dispatcher = controlPlaneAgent(TD, { cert: chainPem, key: keyPem, ca: bundlePem });
    try {
      const wanted = {
        subjectToken: await accessToken(),
        subjectTokenType: 'access_token',
        scope: 'orders:read',
      } as const;
      const unavailable = (thrown: unknown) =>
        thrown instanceof TxnTokenError && thrown.code === 'LOCKSTEP_TXN_TOKEN_UNAVAILABLE' && thrown.status === null;
      await assert.rejects(
        requestTxnToken({ url: `https://127.0.0.1:${await deadPort()}`, trustDomain: TD, dispatcher }, wanted),
        unavailable,
      );
      await assert.rejects(
        requestTxnToken(
          { url: controlPlane.url, trustDomain: TD, dispatcher },
          { ...wanted, signal: AbortSignal.abort() },
        ),
        unavailable,
      );
    } finally {
      await dispatcher.close();
    }
  });

  it('refuses a request without a scope or with an unknown subject token type before sending anything', async () => {
    await assert.rejects(
      gateway.txnToken({ subjectToken: 'x', subjectTokenType: 'access_token', scope: ' ' }),
      (error: unknown) => error instanceof TypeError && /scope: 'orders:create'/.test(error.message),
    );
    const unknownType = {
      subjectToken: 'x',
      subjectTokenType: 'id_token',
      scope: 'orders:read',
    } as unknown as Parameters<WorkloadAgent['txnToken']>[0];
    await assert.rejects(
      gateway.txnToken(unknownType),
      (error: unknown) => error instanceof TypeError && /access_token, txn_token, self_signed/.test(error.message),
    );
  });

  it("signs the subject token itself for self_signed: the Txn-Token is the workload's own, on nobody else's behalf", async () => {
    const token = await gateway.txnToken({ subjectTokenType: 'self_signed', scope: 'orders:read' });
    const claims = decodeJwt(token);
    assert.equal(claims.sub, GATEWAY, 'a job acts only as itself');
    assert.equal(claims.req_wl, GATEWAY);
    assert.equal(claims.scope, 'orders:read');
    assert.deepEqual(claims.tctx, { roles: [] }, "no user, so no roles: the policy's customer rule does not apply");
    assert.ok(claims.exp! - claims.iat! >= 290, "the subject token does not cut the Txn-Token's 5 minutes short");
    const response = await gateway.request(`${origin}/orders/1`, { server: 'orders', txnToken: token });
    assert.equal(response.statusCode, 403);
    assert.equal(((await response.body.json()) as { error: string }).error, 'LOCKSTEP_ERR_DENIED');
    await assert.rejects(
      orders.txnToken({ subjectTokenType: 'self_signed', scope: 'orders:read' }),
      (thrown: unknown) =>
        thrown instanceof TxnTokenError &&
        thrown.code === 'LOCKSTEP_TXN_TOKEN_REFUSED' &&
        thrown.error === 'unauthorized_client',
      'no policy lets orders start its own work',
    );
  });

  it('still wants a subject token for every other kind, and says how to do without one', async () => {
    const noSubject = { subjectTokenType: 'access_token', scope: 'orders:read' } as unknown as Parameters<
      WorkloadAgent['txnToken']
    >[0];
    await assert.rejects(
      gateway.txnToken(noSubject),
      (error: unknown) =>
        error instanceof TypeError && /subjectTokenType 'self_signed' without subjectToken/.test(error.message),
    );
  });

  it('calls a guarded service with agent.request: mTLS with its SVID, the Txn-Token in its header', async () => {
    const txnToken = await gateway.txnToken({
      subjectToken: await accessToken(),
      subjectTokenType: 'access_token',
      scope: 'orders:read',
    });
    const response = await gateway.request(`${origin}/orders/1`, {
      server: 'orders',
      txnToken,
      headers: { 'Txn-Token': 'stale' },
    });
    assert.deepEqual(
      { status: response.statusCode, body: await response.body.json() },
      { status: 200, body: { onBehalfOf: 'alice' } },
    );
  });

  it('refuses a server that is not the one named, before the request and its Txn-Token are sent', async () => {
    const served = guard.stats();
    const txnToken = await gateway.txnToken({
      subjectToken: await accessToken(),
      subjectTokenType: 'access_token',
      scope: 'orders:read',
    });
    await assert.rejects(
      gateway.request(`${origin}/orders/1`, { server: 'payments', txnToken }),
      /presented spiffe:\/\/shop\.test\/svc\/orders, not spiffe:\/\/shop\.test\/svc\/payments/,
    );
    assert.deepEqual(guard.stats(), served, 'the guard decided nothing: no request reached it');
    const noServer = { txnToken } as unknown as Parameters<WorkloadAgent['request']>[1];
    await assert.rejects(
      gateway.request(`${origin}/orders/1`, noServer),
      (error: unknown) => error instanceof TypeError && /server: 'orders'/.test(error.message),
    );
  });

  it('refuses a URL that is not https: the request and its Txn-Token would leave in cleartext', async () => {
    let connections = 0;
    const listener = createServer((socket) => {
      connections += 1;
      socket.destroy();
    });
    await new Promise<void>((resolve) => listener.listen(0, '127.0.0.1', resolve));
    const { port } = listener.address() as { port: number };
    try {
      for (const url of [
        `http://127.0.0.1:${port}/orders/1`,
        new URL(`http://127.0.0.1:${port}/orders/1`),
        'orders/1',
      ]) {
        await assert.rejects(
          gateway.request(url, { server: 'orders', txnToken: 'never.sent.anywhere' }),
          (error: unknown) => error instanceof TypeError && /only https:\/\/ URLs.*mTLS/.test(error.message),
        );
      }
      assert.equal(connections, 0, 'nothing connected');
    } finally {
      listener.close();
    }
  });

  it('presents the renewed SVID: a new connection pool after a renewal, and the exchange still works', async () => {
    const before = gateway.controlPlane();
    assert.equal(gateway.controlPlane(), before, 'one pool per SVID');
    await gateway.renew();
    assert.notEqual(gateway.controlPlane(), before);
    const token = await gateway.txnToken({
      subjectToken: await accessToken(),
      subjectTokenType: 'access_token',
      scope: 'orders:read',
    });
    assert.equal((await callOrders(token)).status, 200);
  });
});
