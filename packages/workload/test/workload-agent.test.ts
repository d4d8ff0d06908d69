/**
 * A guarded service driven by `joinAsWorkload`: it joins with a token, gets its policy from the
 * stream, registers, renews its SVID (the service then presents the new certificate), and keeps
 * serving when renewal fails.
 */
import assert from 'node:assert/strict';
import { X509Certificate } from 'node:crypto';
import { cpSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { connect } from 'node:tls';
import { after, before, describe, it } from 'node:test';
import Fastify, { type FastifyInstance } from 'fastify';
import { Agent, request } from 'undici';
import { createGuard, type Guard } from '@lockstep/guard';
import { lockstep } from '@lockstep/guard/fastify';
import { createTxnTokenMinter } from '@lockstep/testkit';
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
  type WorkloadCa,
} from '@lockstep/control-plane';
import {
  defaultWorkloadStateDir,
  joinAsWorkload,
  joinControlPlane,
  type AgentEvent,
  type WorkloadAgent,
  type WorkloadCredentials,
} from '../src/index.ts';

const TD = 'shop.test';
const scratch = mkdtempSync(join(tmpdir(), 'lockstep-agent-'));
let ca: WorkloadCa;
let store: ControlPlaneStore;
let policy: PolicyService;
let controlPlane: RunningControlPlane;
let agent: WorkloadAgent;
let guard: Guard;
let app: FastifyInstance;
let gateway: WorkloadCredentials;
let port: number;
let token: string;
const events: AgentEvent[] = [];

before(async () => {
  const policyDir = join(scratch, 'policies');
  cpSync(new URL('../../guard/example/policies/', import.meta.url), policyDir, { recursive: true });
  ca = await openWorkloadCa({ trustDomain: TD, keyDir: join(scratch, 'keys') });
  store = openSqliteStore(':memory:');
  const policyKey = await openSigningKey(join(scratch, 'keys'), 'policy');
  policy = await createPolicyService({ dir: policyDir, signingKey: policyKey, watch: false });
  controlPlane = await startControlPlane({ ca, store, policy });
  const minter = await createTxnTokenMinter({ trustDomain: TD });

  agent = await joinAsWorkload({
    url: controlPlane.url,
    trustDomain: TD,
    joinToken: (await createJoinToken(store, ca, { service: 'orders', createdBy: 'cli' })).token,
    service: 'orders',
    stateDir: join(scratch, 'orders'),
    retryMs: 50,
    onEvent: (event) => events.push(event),
  });
  guard = await createGuard({
    ...agent.guardOptions(),
    txnTokenKeys: { jwks: minter.jwks },
    policy: { keys: { keys: [policyKey.publicJwk] } },
    logger: { info() {}, warn() {}, error() {} },
  });
  app = Fastify({ https: guard.tlsOptions() });
  await app.register(lockstep, { guard });
  app.get('/orders/:id', { config: { lockstep: { action: 'orders:read' } } }, async () => ({ ok: true }));
  await app.listen({ host: '127.0.0.1', port: 0 });
  port = (app.server.address() as { port: number }).port;
  agent.attach(guard);

  gateway = await joinControlPlane({
    url: controlPlane.url,
    trustDomain: TD,
    joinToken: (await createJoinToken(store, ca, { service: 'gateway', createdBy: 'cli' })).token,
    service: 'gateway',
  });
  token = await minter.mint({ sub: 'alice', tctx: { roles: ['customer'] }, req_wl: gateway.spiffeId });
});

after(async () => {
  await agent.close();
  await app.close();
  await guard.close();
  await controlPlane.close();
  policy.close();
  await store.close();
  rmSync(scratch, { recursive: true, force: true });
});

async function status(): Promise<number> {
  const client = new Agent({
    connect: { cert: gateway.chainPem, key: gateway.keyPem, ca: ca.bundlePem, checkServerIdentity: () => undefined },
  });
  try {
    const response = await request(`https://127.0.0.1:${port}/orders/1`, {
      dispatcher: client,
      headers: { 'txn-token': token },
    });
    await response.body.dump();
    return response.statusCode;
  } finally {
    await client.close();
  }
}

async function eventually(check: () => Promise<boolean> | boolean, what: string): Promise<void> {
  const started = Date.now();
  while (Date.now() - started < 5_000) {
    if (await check()) return;
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
  assert.fail(`timed out waiting for ${what}`);
}

/** The serial number of the certificate the service presents on a new connection. */
function servedSerial(): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = connect(
      {
        host: '127.0.0.1',
        port,
        cert: gateway.chainPem,
        key: gateway.keyPem,
        ca: ca.bundlePem,
        checkServerIdentity: () => undefined,
      },
      () => {
        resolve(socket.getPeerCertificate().serialNumber.toLowerCase());
        socket.end();
      },
    );
    socket.on('error', reject);
  });
}

describe('joinAsWorkload', () => {
  it('ships every decision to the monitor by default, spooled in its state directory', () => {
    assert.deepEqual(agent.guardOptions().audit, {
      collector: { url: `${controlPlane.url}/v1/audit/events`, spoolDir: join(scratch, 'orders', 'audit-spool') },
    });
    assert.equal(
      agent.guardOptions({ auditSpoolDir: join(scratch, 'elsewhere') }).audit?.collector.spoolDir,
      join(scratch, 'elsewhere'),
    );
    assert.equal(agent.guardOptions({ auditSpoolDir: false }).audit, undefined, 'false: nothing shipped');
    assert.equal(defaultWorkloadStateDir('orders', {}), join(process.cwd(), '.lockstep', 'workloads', 'orders'));
    assert.equal(
      defaultWorkloadStateDir('orders', { LOCKSTEP_HOME: '/srv/lockstep' }),
      '/srv/lockstep/workloads/orders',
    );
  });

  it('refuses a service name that is no SPIFFE path before it names a directory', async () => {
    await assert.rejects(
      joinAsWorkload({ url: controlPlane.url, trustDomain: TD, joinToken: 'ljt1.x.y', service: '../etc' }),
      TypeError,
    );
  });

  it('joins, receives the policy over the stream, serves, and registers itself', async () => {
    await eventually(async () => (await status()) === 200, 'the service to serve');
    await eventually(
      async () =>
        (await store.services()).some(
          (entry) => entry.service === 'orders' && entry.policyVersion === guard.policyVersion,
        ),
      'the registry entry',
    );
  });

  it('renews its SVID and the service presents the new certificate', async () => {
    const before = new X509Certificate(agent.credentials.chainPem).serialNumber.toLowerCase();
    assert.equal(await servedSerial(), before);
    await agent.renew();
    const after = new X509Certificate(agent.credentials.chainPem).serialNumber.toLowerCase();
    assert.notEqual(after, before);
    assert.equal(await servedSerial(), after);
    assert.ok(events.some((event) => event.kind === 'renewed'));
    assert.equal(await status(), 200);
    assert.deepEqual(
      (await store.issuedSvids('spiffe://shop.test/svc/orders')).map((svid) => svid.via),
      ['join', 'renew'],
    );
  });

  it('keeps serving when renewal is refused (revoked workload), and says so', async () => {
    await store.addRevocation({
      kind: 'spiffeId',
      value: 'spiffe://shop.test/svc/orders',
      reason: 'test',
      actor: 'test',
      at: Date.now(),
    });
    await assert.rejects(agent.renew(), /LOCKSTEP_CP_WORKLOAD_REVOKED/);
    const failed = events.find((event) => event.kind === 'renewal-failed');
    assert.ok(failed && failed.kind === 'renewal-failed' && /revoked/.test(failed.reason));
    assert.equal(await status(), 200, 'fail-static: the current SVID stays in use until it expires');
  });
});
