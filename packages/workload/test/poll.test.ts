/**
 * The fallback to the stream: plain GETs over mTLS — the ETag'd policy bundle and the revocation
 * list. A guard following the control plane by polling alone still gets its policy, policy changes
 * and revocations.
 */
import assert from 'node:assert/strict';
import { cpSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import Fastify, { type FastifyInstance } from 'fastify';
import { Agent, request } from 'undici';
import { createGuard, type Guard } from '@lockstep/guard';
import { lockstep } from '@lockstep/guard/fastify';
import { createTxnTokenMinter, type TxnTokenMinter } from '@lockstep/testkit';
import {
  createJoinToken,
  createPolicyService,
  openSigningKey,
  openSqliteStore,
  openWorkloadCa,
  startControlPlane,
  type ControlPlaneStore,
  type PolicyService,
  type RunningControlPlane,
} from '@lockstep/control-plane';
import { connectGuardStream, joinControlPlane, type GuardStream, type WorkloadCredentials } from '../src/index.ts';

const TD = 'shop.test';
const scratch = mkdtempSync(join(tmpdir(), 'lockstep-poll-'));
const policyDir = join(scratch, 'policies');

let store: ControlPlaneStore;
let policy: PolicyService;
let controlPlane: RunningControlPlane;
let minter: TxnTokenMinter;
let orders: WorkloadCredentials;
let gateway: WorkloadCredentials;
let guard: Guard;
let app: FastifyInstance;
let stream: GuardStream;
let origin: string;

before(async () => {
  cpSync(new URL('../../guard/example/policies/', import.meta.url), policyDir, { recursive: true });
  const ca = await openWorkloadCa({ trustDomain: TD, keyDir: join(scratch, 'keys') });
  store = openSqliteStore(join(scratch, 'cp.db'));
  const signingKey = await openSigningKey(join(scratch, 'keys'), 'policy');
  policy = await createPolicyService({ dir: policyDir, signingKey });
  controlPlane = await startControlPlane({ ca, store, policy });
  minter = await createTxnTokenMinter({ trustDomain: TD });
  const join_ = async (service: string) =>
    joinControlPlane({
      url: controlPlane.url,
      trustDomain: TD,
      joinToken: (await createJoinToken(store, ca, { service, createdBy: 'cli' })).token,
      service,
    });
  orders = await join_('orders');
  gateway = await join_('gateway');
  guard = await createGuard({
    service: 'orders',
    trustDomain: TD,
    trustBundle: orders.bundlePem,
    svid: { cert: orders.chainPem, key: orders.keyPem },
    txnTokenKeys: { jwks: minter.jwks },
    policy: { keys: { keys: [signingKey.publicJwk] } },
    logger: { info() {}, warn() {}, error() {} },
  });
  app = Fastify({ https: guard.tlsOptions() });
  await app.register(lockstep, { guard });
  app.get('/orders/:id', { config: { lockstep: { action: 'orders:read' } } }, async () => ({ ok: true }));
  await app.listen({ host: '127.0.0.1', port: 0 });
  origin = `https://127.0.0.1:${(app.server.address() as { port: number }).port}`;
  stream = connectGuardStream({
    url: controlPlane.url,
    trustDomain: TD,
    tls: { cert: orders.chainPem, key: orders.keyPem, ca: orders.bundlePem },
    target: guard,
    transport: 'poll',
    pollMs: 100,
  });
});

after(async () => {
  await stream.close();
  await app.close();
  await guard.close();
  policy.close();
  await controlPlane.close();
  await store.close();
  rmSync(scratch, { recursive: true, force: true });
});

async function get(path: string, who: WorkloadCredentials | null, headers: Record<string, string> = {}) {
  const agent = new Agent({
    connect: {
      ...(who === null ? {} : { cert: who.chainPem, key: who.keyPem }),
      ca: orders.bundlePem,
      checkServerIdentity: () => undefined,
    },
  });
  try {
    const response = await request(`${controlPlane.url}${path}`, { dispatcher: agent, headers });
    const text = await response.body.text();
    return {
      status: response.statusCode,
      etag: response.headers.etag,
      body: text === '' ? null : (JSON.parse(text) as Record<string, unknown>),
    };
  } finally {
    await agent.close();
  }
}

async function status(sub: string): Promise<number> {
  const agent = new Agent({
    connect: {
      cert: gateway.chainPem,
      key: gateway.keyPem,
      ca: gateway.bundlePem,
      checkServerIdentity: () => undefined,
    },
  });
  try {
    const response = await request(`${origin}/orders/1`, {
      dispatcher: agent,
      headers: { 'txn-token': await minter.mint({ sub, tctx: { roles: ['customer'] }, req_wl: gateway.spiffeId }) },
    });
    await response.body.dump();
    return response.statusCode;
  } finally {
    await agent.close();
  }
}

async function until(sub: string, expected: number): Promise<number> {
  const started = performance.now();
  while (performance.now() - started < 5_000) {
    if ((await status(sub)) === expected) return performance.now() - started;
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
  return assert.fail(`not ${expected} within 5 s`);
}

describe('polling fallback', () => {
  it("serves the caller's slice with an ETag, 304 when unchanged, and only to a workload SVID", async () => {
    const first = await get('/v1/policy/bundle', orders);
    assert.equal(first.status, 200);
    assert.equal(first.etag, `"${String(first.body?.version)}"`);
    assert.equal(
      first.body?.version,
      (await policy.bundleFor('orders'))?.version,
      "the slice of the caller's own service",
    );
    const again = await get('/v1/policy/bundle', orders, { 'if-none-match': String(first.etag) });
    assert.equal(again.status, 304);
    assert.equal((await get('/v1/policy/bundle', null)).status, 401);
    assert.equal((await get('/v1/revocations?since=0', null)).status, 401);
  });

  it('keeps a guard that only polls in step: its policy, a change, a revocation', async () => {
    await until('alice', 200);
    writeFileSync(
      join(policyDir, 'orders.cedar'),
      '@id("admins-only")\npermit (principal == Lockstep::Workload::"spiffe://shop.test/svc/gateway", action == Lockstep::Action::"orders:read", resource == Lockstep::Service::"orders") when { context.roles.contains("admin") };\n',
    );
    const changed = await until('alice', 403);
    console.log(`polling (every 100 ms): policy change enforced in ${changed.toFixed(0)} ms`);
    cpSync(new URL('../../guard/example/policies/orders.cedar', import.meta.url), join(policyDir, 'orders.cedar'));
    await until('bob', 200);
    await controlPlane.revoke({ kind: 'sub', value: 'bob', reason: 'test', actor: 'cli' });
    await until('bob', 401);
    assert.ok(stream.position > 0);
  });
});
