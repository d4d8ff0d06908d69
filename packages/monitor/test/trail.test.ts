/**
 * The audit trail end to end over real mTLS: a guarded Fastify service ships its decisions to the
 * collector on the control plane; the chain and the signed checkpoints verify; bad batches are
 * refused and counted; a transaction's events come back as its call chain. (Tampering: verify.test.ts.)
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';
import { after, before, describe, it } from 'node:test';
import Fastify, { type FastifyInstance } from 'fastify';
import { Agent, request } from 'undici';
import { createGuard, type Guard } from '@lockstep/guard';
import { lockstep } from '@lockstep/guard/fastify';
import { createTxnTokenMinter, type TxnTokenMinter } from '@lockstep/testkit';
import {
  controlPlaneSpiffeId,
  createJoinToken,
  issueAdminCredentials,
  joinControlPlane,
  type ControlPlaneStore,
  type KeyRing,
  type PolicyService,
  type WorkloadCa,
  type WorkloadCredentials,
} from '@lockstep/control-plane';
import {
  assembleControlPlane,
  callChain,
  COLLECTOR_PATH,
  verifyTrail,
  type AssembledControlPlane,
  type Checkpointer,
  type Collector,
} from '../src/index.ts';

const TD = 'shop.test';
const scratch = mkdtempSync(join(tmpdir(), 'lockstep-trail-'));

let ca: WorkloadCa;
let store: ControlPlaneStore;
let policy: PolicyService;
let auditKeys: KeyRing;
let collector: Collector;
let checkpointer: Checkpointer;
let controlPlane: AssembledControlPlane;
let minter: TxnTokenMinter;
let orders: WorkloadCredentials;
let gateway: WorkloadCredentials;
let guard: Guard;
let app: FastifyInstance;
let origin: string;

before(async () => {
  controlPlane = await assembleControlPlane({
    trustDomain: TD,
    keyDir: join(scratch, 'keys'),
    store: { sqlite: join(scratch, 'cp.db') },
    policyDir: new URL('../../guard/example/policies/', import.meta.url).pathname,
    watchPolicy: false,
    checkpointIntervalMs: 3_600_000,
    output: { warning: () => {} },
  });
  ({ ca, store, auditKeys, collector, checkpointer } = controlPlane);
  policy = controlPlane.policy as PolicyService;
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
    policy: { keys: { keys: [...policy.publicJwks.keys] }, bundle: (await policy.bundleFor('orders'))?.bundle ?? '' },
    audit: { collector: { url: `${controlPlane.url}${COLLECTOR_PATH}`, spoolDir: join(scratch, 'spool') } },
    logger: { info() {}, warn() {}, error() {} },
  });
  app = Fastify({ https: guard.tlsOptions() });
  await app.register(lockstep, { guard });
  app.get('/orders/:id', { config: { lockstep: { action: 'orders:read' } } }, async () => ({ ok: true }));
  app.delete('/orders/:id', { config: { lockstep: { action: 'orders:delete' } } }, async () => ({ ok: true }));
  await app.listen({ host: '127.0.0.1', port: 0 });
  origin = `https://127.0.0.1:${(app.server.address() as { port: number }).port}`;
});

after(async () => {
  await app.close();
  await guard.close();
  await controlPlane.close();
  rmSync(scratch, { recursive: true, force: true });
});

const gatewayAgent = () =>
  new Agent({
    connect: {
      cert: gateway.chainPem,
      key: gateway.keyPem,
      ca: gateway.bundlePem,
      checkServerIdentity: () => undefined,
    },
  });

async function calls(count: number, txnToken?: string, method: 'GET' | 'DELETE' = 'GET'): Promise<void> {
  const agent = gatewayAgent();
  try {
    const token =
      txnToken ?? (await minter.mint({ sub: 'alice', tctx: { roles: ['customer'] }, req_wl: gateway.spiffeId }));
    for (let index = 0; index < count; index += 1)
      await (
        await request(`${origin}/orders/${index}`, { method, dispatcher: agent, headers: { 'txn-token': token } })
      ).body.dump();
  } finally {
    await agent.close();
  }
}

async function stored(source: string): Promise<number> {
  return (await store.auditEvents(source, 0, 100_000)).length;
}

async function postBatch(
  body: Buffer | string,
  options: { as?: WorkloadCredentials | null; encoding?: string | null } = {},
) {
  const who = options.as === undefined ? orders : options.as;
  const agent = new Agent({
    connect: {
      ...(who === null ? {} : { cert: who.chainPem, key: who.keyPem }),
      ca: ca.bundlePem,
      checkServerIdentity: () => undefined,
    },
  });
  try {
    const response = await request(`${controlPlane.url}${COLLECTOR_PATH}`, {
      method: 'POST',
      dispatcher: agent,
      body,
      headers: {
        'content-type': 'application/json',
        ...(options.encoding === null ? {} : { 'content-encoding': options.encoding ?? 'gzip' }),
      },
    });
    return { status: response.statusCode, body: (await response.body.json()) as Record<string, unknown> };
  } finally {
    await agent.close();
  }
}

const decision = (service: string, overrides: Record<string, unknown> = {}) => ({
  time: new Date().toISOString(),
  service,
  requestId: 'r-1',
  caller: null,
  sub: null,
  txn: null,
  method: 'GET',
  route: '/x',
  action: 'x',
  resource: service,
  decision: 'allow',
  policyIds: [],
  policyVersion: null,
  reason: 'LOCKSTEP_ALLOW',
  dryRun: false,
  latencyMs: 0.1,
  traceId: null,
  ...overrides,
});

describe('shipping and the collector', () => {
  it('stores every decision the guard made, in a chain that verifies, with signed checkpoints', async () => {
    const txnToken = await minter.mint({ sub: 'alice', tctx: { roles: ['customer'] }, req_wl: gateway.spiffeId });
    await calls(30, txnToken);
    await calls(2, txnToken, 'DELETE');
    await guard.close();
    assert.equal(await stored(orders.spiffeId), 32, 'every decision arrived (30 allowed, 2 denied)');
    await checkpointer.checkpoint();
    const report = await verifyTrail(store, auditKeys.publicJwks());
    assert.deepEqual(report.problems, []);
    assert.equal(report.ok, true);
    // The control plane's own source holds the policy in force at start.
    assert.deepEqual(
      report.sources.map((source) => [source.source, source.events, source.checkpointed]),
      [
        [controlPlaneSpiffeId(TD), 1, 1],
        [orders.spiffeId, 32, 32],
      ],
    );
  });

  it('correlates one transaction into its call chain', async () => {
    const [first] = await store.auditEvents(orders.spiffeId, 0, 1);
    const txn = JSON.parse(first?.event ?? '{}').txn as string;
    const chain = await callChain(store, txn);
    assert.equal(chain.sub, 'alice');
    assert.equal(chain.hops.length, 32);
    assert.deepEqual([...new Set(chain.hops.map((hop) => hop.decision))].sort(), ['allow', 'deny']);
    assert.equal(chain.hops[0]?.caller, gateway.spiffeId);
  });

  it('refuses batches without an SVID, claiming another source, malformed or oversized — and counts them', async () => {
    const before = { ...collector.stats.refused };
    const good = gzipSync(
      JSON.stringify({ stream: 'test', dropped: 0, events: [{ seq: 1, event: decision('orders') }] }),
    );
    assert.equal((await postBatch(good, { as: null })).status, 401);
    const foreign = await postBatch(
      gzipSync(JSON.stringify({ stream: 'test', dropped: 0, events: [{ seq: 1, event: decision('payments') }] })),
    );
    assert.equal(foreign.status, 400);
    assert.match(String(foreign.body.message), /a guard reports its own decisions only/);
    assert.equal(
      (await postBatch('{"stream":"t","dropped":0,"events":[]}', { encoding: null })).status,
      400,
      'not compressed',
    );
    assert.equal((await postBatch(gzipSync('{not json'))).status, 400);
    assert.equal(
      (
        await postBatch(
          gzipSync(JSON.stringify({ stream: 'test', dropped: 0, events: [{ seq: 0, event: decision('orders') }] })),
        )
      ).status,
      400,
      'seq from 1',
    );
    assert.equal(
      (
        await postBatch(
          gzipSync(
            JSON.stringify({
              stream: 'test',
              dropped: 0,
              events: [{ seq: 1, event: decision('orders', { decision: 'maybe' }) }],
            }),
          ),
        )
      ).status,
      400,
    );
    assert.equal((await postBatch(gzipSync(Buffer.alloc(9 * 1024 * 1024, 0x20)))).status, 400, 'inflates past 8 MiB');
    const refused = collector.stats.refused;
    assert.deepEqual(
      [
        refused.unauthenticated - before.unauthenticated,
        refused.foreign - before.foreign,
        refused.malformed - before.malformed,
        refused.oversized - before.oversized,
      ],
      [1, 1, 4, 1],
    );
    assert.equal(await stored('spiffe://shop.test/svc/payments'), 0, 'nothing of a refused batch is stored');
  });

  it('exposes Prometheus metrics to administrators only', async () => {
    const admin = await issueAdminCredentials(ca, 'prometheus');
    const get = async (who: { chainPem: string; keyPem: string }) => {
      const agent = new Agent({
        connect: { cert: who.chainPem, key: who.keyPem, ca: ca.bundlePem, checkServerIdentity: () => undefined },
      });
      try {
        const response = await request(`${controlPlane.url}/metrics`, { dispatcher: agent });
        return { status: response.statusCode, text: await response.body.text() };
      } finally {
        await agent.close();
      }
    };
    const scraped = await get(admin);
    assert.equal(scraped.status, 200);
    assert.match(scraped.text, /lockstep_collector_events_total \d+/);
    assert.match(scraped.text, /lockstep_collector_refused_total\{reason="foreign"\} 1/);
    assert.match(scraped.text, /lockstep_audit_sources [1-9]/);
    assert.equal((await get(orders)).status, 403, 'a workload may not read them');
  });

  it('offers no way to change or delete the trail through the API', async () => {
    const agent = new Agent({
      connect: { cert: orders.chainPem, key: orders.keyPem, ca: ca.bundlePem, checkServerIdentity: () => undefined },
    });
    try {
      for (const method of ['PUT', 'PATCH', 'DELETE'] as const) {
        const response = await request(`${controlPlane.url}${COLLECTOR_PATH}`, { method, dispatcher: agent });
        await response.body.dump();
        assert.equal(response.statusCode, 404, method);
      }
    } finally {
      await agent.close();
    }
  });
});
