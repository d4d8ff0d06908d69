/**
 * Policy and revocation push, end to end over real TLS: a guarded Fastify service that joined with a
 * join token follows the control plane's stream; a policy change and a `sub` revocation are each
 * enforced by the service within 1 s (measured and printed). Then the control plane goes away and the
 * service keeps enforcing what it has (fail-static), and on its return the guard catches up. A lifted
 * revocation (an administrator's mistake) reaches the guard the same way, also when it was missed.
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
  issueAdminCredentials,
  subscribeAdminActions,
  createPolicyService,
  openSigningKey,
  openSqliteStore,
  openWorkloadCa,
  startControlPlane,
  type ControlPlaneStore,
  type PolicyService,
  type RunningControlPlane,
  type WorkloadCa,
} from '../src/index.ts';
import {
  connectGuardStream,
  joinControlPlane,
  startRegistryHeartbeat,
  type GuardStream,
  type StreamEvent,
  type WorkloadCredentials,
} from '@lockstep/workload';

const TD = 'shop.test';
const EXAMPLE_POLICIES = new URL('../../guard/example/policies/', import.meta.url);
const scratch = mkdtempSync(join(tmpdir(), 'lockstep-push-'));
const policyDir = join(scratch, 'policies');
const quiet = { info() {}, warn() {}, error() {} };

let ca: WorkloadCa;
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
const events: StreamEvent[] = [];

async function join_(service: string): Promise<WorkloadCredentials> {
  const { token } = await createJoinToken(store, ca, { service, createdBy: 'cli' });
  return joinControlPlane({ url: controlPlane.url, trustDomain: TD, joinToken: token, service });
}

function follow(): GuardStream {
  return connectGuardStream({
    url: controlPlane.url,
    trustDomain: TD,
    tls: { cert: orders.chainPem, key: orders.keyPem, ca: orders.bundlePem },
    target: guard,
    onEvent: (event) => events.push(event),
  });
}

before(async () => {
  cpSync(EXAMPLE_POLICIES, policyDir, { recursive: true });
  ca = await openWorkloadCa({ trustDomain: TD, keyDir: join(scratch, 'keys') });
  store = openSqliteStore(join(scratch, 'cp.db'));
  const signingKey = await openSigningKey(join(scratch, 'keys'), 'policy');
  policy = await createPolicyService({ dir: policyDir, signingKey });
  controlPlane = await startControlPlane({ ca, store, policy });
  minter = await createTxnTokenMinter({ trustDomain: TD });
  orders = await join_('orders');
  gateway = await join_('gateway');

  guard = await createGuard({
    service: 'orders',
    trustDomain: TD,
    trustBundle: orders.bundlePem,
    svid: { cert: orders.chainPem, key: orders.keyPem },
    txnTokenKeys: { jwks: minter.jwks },
    policy: { keys: { keys: [signingKey.publicJwk] } },
    logger: quiet,
  });
  app = Fastify({ https: guard.tlsOptions() });
  await app.register(lockstep, { guard });
  app.get('/orders/:id', { config: { lockstep: { action: 'orders:read' } } }, async () => ({ ok: true }));
  await app.listen({ host: '127.0.0.1', port: 0 });
  origin = `https://127.0.0.1:${(app.server.address() as { port: number }).port}`;
  stream = follow();
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

const gatewayAgent = () =>
  new Agent({
    connect: {
      cert: gateway.chainPem,
      key: gateway.keyPem,
      ca: gateway.bundlePem,
      checkServerIdentity: () => undefined,
    },
  });

async function status(txnToken: string): Promise<number> {
  const agent = gatewayAgent();
  try {
    const response = await request(`${origin}/orders/1`, { dispatcher: agent, headers: { 'txn-token': txnToken } });
    await response.body.dump();
    return response.statusCode;
  } finally {
    await agent.close();
  }
}

/** Polls until `status(token)` is `expected`; returns how long it took, in ms. */
async function until(token: string, expected: number, limitMs = 5_000): Promise<number> {
  const started = performance.now();
  while (performance.now() - started < limitMs) {
    if ((await status(token)) === expected) return performance.now() - started;
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
  assert.fail(`still not ${expected} after ${limitMs} ms (last: ${await status(token)})`);
}

describe('push from the control plane', () => {
  it("delivers the service's policy slice on connect: the guard goes from 503 to enforcing", async () => {
    const alice = await minter.mint({ sub: 'alice', tctx: { roles: ['customer'] }, req_wl: gateway.spiffeId });
    await until(alice, 200);
    assert.equal(
      guard.policyVersion,
      (await policy.bundleFor('orders'))?.version,
      'the guard enforces its slice of the version in force',
    );
    assert.ok(events.some((event) => event.kind === 'policy'));
  });

  it('enforces a policy change within 1 s, and keeps the last good set when a change is invalid', async () => {
    const bob = await minter.mint({ sub: 'bob', tctx: { roles: ['customer'] }, req_wl: gateway.spiffeId });
    assert.equal(await status(bob), 200);
    const before = policy.version;
    const changedAt = performance.now();
    writeFileSync(
      join(policyDir, 'orders.cedar'),
      '// reads are now for admins only\n@id("gateway-admin-read")\npermit (principal == Lockstep::Workload::"spiffe://shop.test/svc/gateway", action == Lockstep::Action::"orders:read", resource == Lockstep::Service::"orders") when { context.roles.contains("admin") };\n',
    );
    await until(bob, 403);
    const elapsed = performance.now() - changedAt;
    console.log(`policy change enforced by the service in ${elapsed.toFixed(0)} ms`);
    assert.ok(elapsed <= 1_000, `policy change took ${elapsed.toFixed(0)} ms`);
    assert.notEqual(guard.policyVersion, before);

    const kept = policy.version;
    const enforced = guard.policyVersion;
    const audited: { decision: string; reason: string; action: string | null }[] = [];
    const stopAudit = subscribeAdminActions((event) => audited.push(event));
    writeFileSync(join(policyDir, 'broken.cedar'), 'permit (principal, action, resource) when { context.nope };\n');
    const refused = await policy.reload();
    assert.equal(refused.kind, 'refused');
    assert.match(refused.kind === 'refused' ? refused.reason : '', /broken\.cedar/, 'the refusal names the file');
    assert.equal(policy.version, kept, 'the control plane keeps serving the last good set');
    rmSync(join(policyDir, 'broken.cedar'));
    await policy.reload();
    stopAudit();
    assert.ok(
      audited.some(
        (event) =>
          event.action === 'admin:policy.apply' &&
          event.decision === 'deny' &&
          event.reason === 'LOCKSTEP_POLICY_REFUSED',
      ),
      'the refused change is an audit event',
    );
    assert.equal(guard.policyVersion, enforced, 'the guard never saw the invalid set');
    assert.equal(await status(bob), 403);
  });

  it('enforces a sub revocation within 1 s', async () => {
    const root = await minter.mint({ sub: 'root', tctx: { roles: ['admin'] }, req_wl: gateway.spiffeId });
    assert.equal(await status(root), 200);
    const revokedAt = performance.now();
    await controlPlane.revoke({ kind: 'sub', value: 'root', reason: 'compromised', actor: 'test' });
    await until(root, 401);
    const elapsed = performance.now() - revokedAt;
    console.log(`sub revocation enforced by the service in ${elapsed.toFixed(0)} ms`);
    assert.ok(elapsed <= 1_000, `revocation took ${elapsed.toFixed(0)} ms`);
  });

  it('fails static while the control plane is down, then reconnects and catches up on missed revocations', async () => {
    const carol = await minter.mint({ sub: 'carol', tctx: { roles: ['admin'] }, req_wl: gateway.spiffeId });
    assert.equal(await status(carol), 200);
    const port = Number(new URL(controlPlane.url).port);
    await controlPlane.close();
    assert.equal(await status(carol), 200, 'the service keeps serving with what it has');

    // Revoked while this guard was cut off (as through another replica sharing the store).
    await store.addRevocation({
      kind: 'sub',
      value: 'carol',
      reason: 'left the company',
      actor: 'test',
      at: Date.now(),
    });
    assert.equal(await status(carol), 200, 'nothing reached the guard yet');

    const disconnectedAt = events.length;
    controlPlane = await startControlPlane({ ca, store, policy, port });
    const elapsed = await until(carol, 401, 15_000);
    console.log(
      `after the control plane came back, the missed revocation was enforced in ${elapsed.toFixed(0)} ms (reconnect delay included)`,
    );
    assert.ok(
      events.slice(disconnectedAt).some((event) => event.kind === 'connected'),
      'the guard reconnected',
    );
    const alice = await minter.mint({ sub: 'alice', tctx: { roles: ['admin'] }, req_wl: gateway.spiffeId });
    assert.equal(await status(alice), 200, 'everyone else is still served');
  });

  it('serves a lifted revocation again, catches up on a lift it missed, and a replay from the start brings nothing back', async () => {
    const root = await minter.mint({ sub: 'root', tctx: { roles: ['admin'] }, req_wl: gateway.spiffeId });
    assert.equal(await status(root), 401, 'revoked above');
    const liftedAt = performance.now();
    assert.notEqual(
      await controlPlane.lift({ kind: 'sub', value: 'root', reason: 'revoked by mistake', actor: 'test' }),
      null,
    );
    await until(root, 200);
    const elapsed = performance.now() - liftedAt;
    console.log(`lift enforced by the service in ${elapsed.toFixed(0)} ms`);
    assert.ok(events.some((event) => event.kind === 'lift' && event.revocation.value === 'root'));

    // Lifted while this guard was cut off (as through another replica sharing the store).
    const carol = await minter.mint({ sub: 'carol', tctx: { roles: ['admin'] }, req_wl: gateway.spiffeId });
    assert.equal(await status(carol), 401, 'revoked above');
    const port = Number(new URL(controlPlane.url).port);
    await controlPlane.close();
    await store.liftRevocation('sub', 'carol', { reason: 'came back', actor: 'test', at: Date.now() });
    controlPlane = await startControlPlane({ ca, store, policy, port });
    await until(carol, 200, 15_000);

    // A follower that starts from position 0 (a restarted service) replays the whole feed: nothing is revoked again.
    const replay = follow();
    try {
      await until(root, 200);
      await new Promise((resolve) => setTimeout(resolve, 500));
      assert.deepEqual([await status(root), await status(carol)], [200, 200]);
    } finally {
      await replay.close();
    }
  });
});

describe('a guard of the previous version, which knows no lifts', () => {
  // Its rule: every `revocation` event of the stream, and every entry of GET /v1/revocations, is a
  // revocation, whatever else the entry holds (`lifted` included); events of any other name are ignored.
  const ordersAgent = () =>
    new Agent({
      connect: {
        cert: orders.chainPem,
        key: orders.keyPem,
        ca: orders.bundlePem,
        checkServerIdentity: () => undefined,
      },
    });
  type StreamedEntry = { event: string; entry: { kind: string; value: string; lifted?: unknown } };

  /** The stream from position 0 up to `lastSeq`, as events. */
  async function replayStream(lastSeq: number): Promise<StreamedEntry[]> {
    const agent = ordersAgent();
    const response = await request(`${controlPlane.url}/v1/stream`, { dispatcher: agent });
    let text = '';
    try {
      for await (const chunk of response.body) {
        text += String(chunk);
        if (text.includes(`id: ${lastSeq}\n`) && text.endsWith('\n\n')) break;
      }
    } finally {
      response.body.destroy();
      await agent.destroy();
    }
    return text.split('\n\n').flatMap((block) => {
      const event = /^event: (.+)$/m.exec(block)?.[1];
      const data = /^data: (.+)$/m.exec(block)?.[1];
      if (event === undefined || data === undefined || event === 'policy' || event === 'trust-bundle') return [];
      return [{ event, entry: JSON.parse(data) as StreamedEntry['entry'] }];
    });
  }

  it('finds no entry for a lifted value, in the stream or in the feed, where it would revoke it', async () => {
    await controlPlane.revoke({ kind: 'sub', value: 'dave', reason: 'still revoked', actor: 'test' });
    const feed = await store.revocationsSince(0);
    const lastSeq = Math.max(...feed.map((entry) => entry.seq));
    const lifted = feed
      .filter((entry) => entry.lifted !== null)
      .map((entry) => entry.value)
      .sort();
    assert.deepEqual(lifted, ['carol', 'root'], 'lifted by the tests above');

    const events = await replayStream(lastSeq);
    const revokedByOldRule = events.filter(({ event }) => event === 'revocation').map(({ entry }) => entry.value);
    assert.deepEqual(revokedByOldRule, ['dave']);
    const lifts = events
      .filter(({ event }) => event === 'lift')
      .map(({ entry }) => entry.value)
      .sort();
    assert.deepEqual(lifts, ['carol', 'root'], 'lifts in events of their own');

    const agent = ordersAgent();
    try {
      const read = async (headers: Record<string, string>) => {
        const answer = await request(`${controlPlane.url}/v1/revocations?since=0`, { dispatcher: agent, headers });
        return ((await answer.body.json()) as { revocations: { value: string; lifted: unknown }[] }).revocations;
      };
      assert.deepEqual(
        (await read({})).map((entry) => entry.value),
        ['dave'],
        'without asking for lifts',
      );
      const withLifts = await read({ 'lockstep-revocation-lifts': '1' });
      const lifted = withLifts
        .filter((entry) => entry.lifted !== null)
        .map((entry) => entry.value)
        .sort();
      assert.deepEqual(lifted, ['carol', 'root'], 'a guard that asks');
    } finally {
      await agent.close();
    }
  });

  it('the current guard, polling, asks for lifts and applies them', async () => {
    const dave = await minter.mint({ sub: 'dave', tctx: { roles: ['admin'] }, req_wl: gateway.spiffeId });
    await until(dave, 401);
    // The stream is the default: only a poller would miss a lift left out of the feed.
    await stream.close();
    stream = connectGuardStream({
      url: controlPlane.url,
      trustDomain: TD,
      tls: { cert: orders.chainPem, key: orders.keyPem, ca: orders.bundlePem },
      target: guard,
      onEvent: (event) => events.push(event),
      transport: 'poll',
      pollMs: 100,
    });
    await until(dave, 401);
    assert.notEqual(
      await controlPlane.lift({ kind: 'sub', value: 'dave', reason: 'revoked by mistake', actor: 'test' }),
      null,
    );
    await until(dave, 200);
  });
});

describe('registry', () => {
  async function call(method: 'GET' | 'POST', path: string, tls: { cert?: string; key?: string }, body?: unknown) {
    const agent = new Agent({ connect: { ca: ca.bundlePem, ...tls, checkServerIdentity: () => undefined } });
    try {
      const response = await request(`${controlPlane.url}${path}`, {
        method,
        dispatcher: agent,
        ...(body === undefined ? {} : { headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) }),
      });
      const text = await response.body.text();
      return { status: response.statusCode, body: (text === '' ? {} : JSON.parse(text)) as Record<string, unknown> };
    } finally {
      await agent.close();
    }
  }

  it('shows each guard as it reported itself: routes and actions, the policy version in force, SVID expiry, mode', async () => {
    const heartbeat = startRegistryHeartbeat({
      url: controlPlane.url,
      trustDomain: TD,
      tls: { cert: orders.chainPem, key: orders.keyPem, ca: orders.bundlePem },
      guard,
      intervalMs: 60_000,
    });
    try {
      await heartbeat.beat();
      const admin = await issueAdminCredentials(ca, 'ops');
      const listed = await call('GET', '/v1/services', { cert: admin.chainPem, key: admin.keyPem });
      assert.equal(listed.status, 200);
      const entry = (listed.body.services as Record<string, unknown>[]).find((service) => service.service === 'orders');
      assert.ok(entry, 'orders is registered');
      assert.equal(entry.spiffeId, orders.spiffeId);
      assert.equal(entry.policyVersion, guard.policyVersion);
      assert.equal(
        entry.policyVersion,
        (await policy.bundleFor('orders'))?.version,
        'no drift: the guard enforces the current slice',
      );
      assert.equal(entry.mode, 'enforce');
      assert.equal(entry.stale, false);
      // Fastify exposes HEAD for every GET route; the guard enforces (and reports) both.
      assert.deepEqual(
        entry.routes,
        ['GET', 'HEAD'].map((method) => ({
          method,
          template: '/orders/:id',
          action: 'orders:read',
          public: false,
          dryRun: false,
          owner: false,
          validatesBody: false,
        })),
      );
      assert.deepEqual(
        entry.endpoints,
        guard.status().endpoints,
        'where the guard listens: the scanner sends only there',
      );
      assert.match(String((entry.endpoints as string[])[0]), /^127\.0\.0\.1:\d+$/);

      // Drift is visible to administrators: what each guard should enforce and what it reports.
      const drift = await call('GET', '/v1/admin/policy', { cert: admin.chainPem, key: admin.keyPem });
      assert.equal(drift.body.version, policy.version);
      const ordersDrift = (
        drift.body.services as { service: string; inSync: boolean; expected: string; enforced: string }[]
      ).find((service) => service.service === 'orders');
      assert.deepEqual(ordersDrift && [ordersDrift.inSync, ordersDrift.enforced], [true, guard.policyVersion]);
      await store.recordHeartbeat({
        spiffeId: 'spiffe://shop.test/svc/legacy',
        service: 'legacy',
        routes: [],
        policyVersion: 'an-old-version',
        svidExpiresAt: Date.now() + 60_000,
        mode: 'enforce',
        guardVersion: '0.0.1',
        lastSeen: Date.now(),
        endpoints: [],
      });
      const legacy = (
        (await call('GET', '/v1/admin/policy', { cert: admin.chainPem, key: admin.keyPem })).body.services as {
          service: string;
          inSync: boolean;
        }[]
      ).find((service) => service.service === 'legacy');
      assert.equal(legacy?.inSync, false, 'a guard on another version shows as drift');
    } finally {
      await heartbeat.stop();
    }
  });

  it('takes the identity from the SVID only, and lets neither strangers report nor workloads read the registry', async () => {
    const report = {
      routes: [],
      policyVersion: null,
      svidExpiresAt: new Date().toISOString(),
      mode: 'enforce',
      guardVersion: 'x',
    };
    const anonymous = await call('POST', '/v1/registry/heartbeat', {}, report);
    assert.deepEqual([anonymous.status, anonymous.body.error], [401, 'LOCKSTEP_CP_PEER_UNAUTHENTICATED']);
    const claimed = await call(
      'POST',
      '/v1/registry/heartbeat',
      { cert: gateway.chainPem, key: gateway.keyPem },
      { ...report, spiffeId: orders.spiffeId },
    );
    assert.deepEqual(
      [claimed.status, claimed.body.error],
      [400, 'LOCKSTEP_CP_REQUEST_INVALID'],
      'a body naming an identity is refused',
    );
    const asWorkload = await call('GET', '/v1/services', { cert: gateway.chainPem, key: gateway.keyPem });
    assert.deepEqual([asWorkload.status, asWorkload.body.error], [403, 'LOCKSTEP_CP_ADMIN_REQUIRED']);
  });

  it('records where a guard listens: its ports, at the address its heartbeat came from (a workload cannot register another host)', async () => {
    const report = {
      routes: [],
      policyVersion: null,
      svidExpiresAt: new Date().toISOString(),
      mode: 'enforce',
      guardVersion: 'x',
    };
    const everywhere = await call(
      'POST',
      '/v1/registry/heartbeat',
      { cert: gateway.chainPem, key: gateway.keyPem },
      { ...report, endpoints: ['*:4100', '[::1]:4101', '10.0.0.7:4102'] },
    );
    assert.equal(everywhere.status, 204);
    const admin = await issueAdminCredentials(ca, 'ops');
    const listed = await call('GET', '/v1/services', { cert: admin.chainPem, key: admin.keyPem });
    const entry = (listed.body.services as { service: string; endpoints: string[] }[]).find(
      (service) => service.service === 'gateway',
    );
    assert.deepEqual(entry?.endpoints, ['127.0.0.1:4100', '127.0.0.1:4101', '127.0.0.1:4102']);
    for (const endpoint of ['http://127.0.0.1:4100', '127.0.0.1', 'a b:1']) {
      const refused = await call(
        'POST',
        '/v1/registry/heartbeat',
        { cert: gateway.chainPem, key: gateway.keyPem },
        { ...report, endpoints: [endpoint] },
      );
      assert.equal(refused.status, 400, endpoint);
    }
  });
});
