/**
 * Rotating the workload CA's root without an outage, over real TLS: prepare (the new root joins the
 * bundle and reaches the guard through the stream) → activate (the new CA signs; workloads holding
 * old-root SVIDs keep working) → renewal moves a workload to the new root. Both steps are admin
 * actions, audited.
 */
import assert from 'node:assert/strict';
import { X509Certificate } from 'node:crypto';
import { cpSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import Fastify, { type FastifyInstance } from 'fastify';
import { Agent, request } from 'undici';
import { createGuard, type DecisionEvent, type Guard } from '@lockstep/guard';
import { lockstep } from '@lockstep/guard/fastify';
import { createTxnTokenMinter, type TxnTokenMinter } from '@lockstep/testkit';
import {
  createJoinToken,
  createPolicyService,
  issueAdminCredentials,
  openSigningKey,
  openSqliteStore,
  openWorkloadCa,
  startControlPlane,
  subscribeAdminActions,
  type ControlPlaneStore,
  type PolicyService,
  type RunningControlPlane,
  type WorkloadCa,
} from '../src/index.ts';
import {
  controlPlaneAgent,
  joinAsWorkload,
  joinControlPlane,
  type AgentEvent,
  type WorkloadAgent,
  type WorkloadCredentials,
} from '@lockstep/workload';

const TD = 'shop.test';
const scratch = mkdtempSync(join(tmpdir(), 'lockstep-roots-'));
const policyDir = join(scratch, 'policies');
const quiet = { info() {}, warn() {}, error() {} };

let ca: WorkloadCa;
let store: ControlPlaneStore;
let policy: PolicyService;
let controlPlane: RunningControlPlane;
let minter: TxnTokenMinter;
let agent: WorkloadAgent;
let guard: Guard;
let orders: FastifyInstance;
let ordersUrl: string;
let gateway: WorkloadCredentials;
const agentEvents: AgentEvent[] = [];
const audited: DecisionEvent[] = [];
let stopAudit: () => void;

before(async () => {
  cpSync(new URL('../../guard/example/policies/', import.meta.url), policyDir, { recursive: true });
  const keyDir = join(scratch, 'keys');
  ca = await openWorkloadCa({ trustDomain: TD, keyDir });
  store = openSqliteStore(join(scratch, 'cp.db'));
  const policyKey = await openSigningKey(keyDir, 'policy');
  policy = await createPolicyService({ dir: policyDir, signingKey: policyKey, watch: false });
  controlPlane = await startControlPlane({ ca, store, policy });
  minter = await createTxnTokenMinter({ trustDomain: TD });
  const { token } = await createJoinToken(store, ca, { service: 'orders', createdBy: 'cli' });
  agent = await joinAsWorkload({
    url: controlPlane.url,
    trustDomain: TD,
    joinToken: token,
    service: 'orders',
    onEvent: (event) => agentEvents.push(event),
  });
  guard = await createGuard({
    ...agent.guardOptions({ auditSpoolDir: false }),
    txnTokenKeys: { jwks: minter.jwks },
    policy: { keys: { keys: [policyKey.publicJwk] } },
    logger: quiet,
  });
  agent.attach(guard);
  orders = Fastify({ https: guard.tlsOptions() });
  await orders.register(lockstep, { guard });
  orders.get('/orders/:id', { config: { lockstep: { action: 'orders:read' } } }, async () => ({ ok: true }));
  await orders.listen({ host: '127.0.0.1', port: 0 });
  ordersUrl = `https://127.0.0.1:${(orders.server.address() as { port: number }).port}`;
  const gatewayToken = await createJoinToken(store, ca, { service: 'gateway', createdBy: 'cli' });
  gateway = await joinControlPlane({
    url: controlPlane.url,
    trustDomain: TD,
    joinToken: gatewayToken.token,
    service: 'gateway',
  });
  stopAudit = subscribeAdminActions((event) => audited.push(event));
});

after(async () => {
  stopAudit();
  await orders.close();
  await agent.close();
  await guard.close();
  await controlPlane.close();
  await store.close();
  rmSync(scratch, { recursive: true, force: true });
});

async function adminCall(
  method: 'GET' | 'POST',
  path: string,
): Promise<{ status: number; body: Record<string, unknown> }> {
  const admin = await issueAdminCredentials(ca, 'ops');
  const pool = controlPlaneAgent(TD, { cert: admin.chainPem, key: admin.keyPem, ca: ca.bundlePem });
  try {
    const response = await request(`${controlPlane.url}${path}`, { method, dispatcher: pool });
    return { status: response.statusCode, body: (await response.body.json()) as Record<string, unknown> };
  } finally {
    await pool.close();
  }
}

/** A call from `caller` to the orders service; its status, or the TLS failure. */
async function callOrders(caller: WorkloadCredentials, trustBundle: string): Promise<number | string> {
  const pool = new Agent({
    connect: { cert: caller.chainPem, key: caller.keyPem, ca: trustBundle, checkServerIdentity: () => undefined },
  });
  try {
    const txnToken = await minter.mint({ sub: 'alice', tctx: { roles: ['customer'] }, req_wl: gateway.spiffeId });
    const response = await request(`${ordersUrl}/orders/7`, { dispatcher: pool, headers: { 'txn-token': txnToken } });
    await response.body.dump();
    return response.statusCode;
  } catch (error) {
    return `TLS: ${(error as Error).message}`;
  } finally {
    await pool.close();
  }
}

const certificatesIn = (pem: string) =>
  pem.match(/-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g) ?? [];

async function eventually(check: () => boolean, what: string, limitMs = 5_000): Promise<void> {
  const started = Date.now();
  while (!check()) {
    if (Date.now() - started > limitMs) assert.fail(`${what}: not within ${limitMs} ms`);
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}

describe('root rotation', () => {
  let oldRoot: string;
  let earlyToken: string;

  it('prepare: the new root joins the bundle and reaches the guard through the stream', async () => {
    await eventually(() => agentEvents.some((event) => event.kind === 'connected'), 'stream connected');
    assert.equal(await callOrders(gateway, ca.bundlePem), 200);
    oldRoot = certificatesIn(ca.bundlePem)[0] ?? '';
    earlyToken = (await createJoinToken(store, ca, { service: 'inventory', createdBy: 'cli' })).token;

    const prepared = await adminCall('POST', '/v1/admin/ca/prepare');
    assert.equal(prepared.status, 200, JSON.stringify(prepared.body));
    assert.equal(prepared.body.phase, 'prepared');
    assert.deepEqual(
      (prepared.body.roots as { role: string }[]).map((root) => root.role),
      ['current', 'next'],
    );
    const again = await adminCall('POST', '/v1/admin/ca/prepare');
    assert.equal(again.status, 409);
    assert.equal(again.body.error, 'LOCKSTEP_CP_ROTATION_STATE');

    await eventually(() => agentEvents.some((event) => event.kind === 'trust-bundle'), 'the guard got the new bundle');
    assert.equal(certificatesIn(String(guard.tlsOptions().ca)).length, 2, 'the guard trusts both roots');
    const published = await request(`${controlPlane.url}/v1/bundle`, {
      dispatcher: new Agent({ connect: { ca: oldRoot, checkServerIdentity: () => undefined } }),
    });
    assert.equal(certificatesIn(await published.body.text()).length, 2);
    assert.equal(await callOrders(gateway, ca.bundlePem), 200, 'nothing changes for running workloads');
  });

  it('a join token created before the bundle changed is refused (it pins the old bundle)', async () => {
    await assert.rejects(
      joinControlPlane({ url: controlPlane.url, trustDomain: TD, joinToken: earlyToken, service: 'inventory' }),
      /bundle/i,
    );
  });

  it('activate: the new CA signs; old-root SVIDs keep working; the control plane presents a new-root certificate', async () => {
    const activated = await adminCall('POST', '/v1/admin/ca/activate');
    assert.equal(activated.status, 200, JSON.stringify(activated.body));
    assert.deepEqual(
      (activated.body.roots as { role: string }[]).map((root) => root.role),
      ['current', 'retiring'],
    );
    const newRoot = certificatesIn(ca.bundlePem)[0] ?? '';
    assert.notEqual(newRoot, oldRoot);

    const { token } = await createJoinToken(store, ca, { service: 'payments', createdBy: 'cli' });
    const payments = await joinControlPlane({
      url: controlPlane.url,
      trustDomain: TD,
      joinToken: token,
      service: 'payments',
    });
    const [leaf, intermediate] = certificatesIn(payments.chainPem).map((pem) => new X509Certificate(pem));
    assert.ok(intermediate?.verify(new X509Certificate(newRoot).publicKey), 'the new SVID chains to the new root');
    assert.ok(intermediate !== undefined && leaf?.verify(intermediate.publicKey));
    assert.equal(
      await callOrders(payments, ca.bundlePem),
      403,
      'the guard accepts the new-root certificate (and the policy decides)',
    );
    assert.equal(await callOrders(gateway, ca.bundlePem), 200, 'an old-root SVID keeps working until it is renewed');

    // A client that trusts only the new root reaches the control plane: its certificate was re-issued.
    const onlyNew = await request(`${controlPlane.url}/v1/bundle`, {
      dispatcher: new Agent({ connect: { ca: newRoot, checkServerIdentity: () => undefined } }),
    });
    assert.equal(onlyNew.statusCode, 200);
    await onlyNew.body.dump();
  });

  it('renewal moves a workload to the new root, without a refused request', async () => {
    await agent.renew();
    const chain = certificatesIn(agent.credentials.chainPem).map((pem) => new X509Certificate(pem));
    assert.ok(
      chain[1]?.verify(new X509Certificate(certificatesIn(ca.bundlePem)[0] ?? '').publicKey),
      'renewed SVID chains to the new root',
    );
    assert.equal(await callOrders(gateway, ca.bundlePem), 200);
  });

  it("records both steps as admin audit events with the administrator's SPIFFE ID", () => {
    for (const action of ['admin:root.prepare', 'admin:root.activate']) {
      const event = audited.find((entry) => entry.action === action && entry.decision === 'allow');
      assert.ok(event, action);
      assert.equal(event.caller, `spiffe://${TD}/admin/ops`);
    }
  });
});
