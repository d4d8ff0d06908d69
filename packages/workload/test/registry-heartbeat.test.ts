/**
 * The registry heartbeat's two duties beyond keeping an entry fresh, over real mTLS: after reports
 * that got no answer (the control plane stopped, then started again on its port), the first one that
 * gets through says since when — handed to the server's `onUnreachable` hook, once; and a clean stop
 * deregisters, which only the guard itself can do.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { createServer, type Socket } from 'node:net';
import { join } from 'node:path';
import { after, before, it } from 'node:test';
import { Agent, request } from 'undici';
import {
  createJoinToken,
  openSqliteStore,
  openWorkloadCa,
  STALE_AFTER_MS,
  startControlPlane,
  type ControlPlaneStore,
  type RunningControlPlane,
  type UnreachableReport,
  type WorkloadCa,
} from '@lockstep/control-plane';
import { joinControlPlane, startRegistryHeartbeat, type WorkloadCredentials } from '../src/index.ts';

const TD = 'shop.test';
const scratch = mkdtempSync(join(tmpdir(), 'lockstep-heartbeat-'));
let ca: WorkloadCa;
let store: ControlPlaneStore;
let controlPlane: RunningControlPlane;
let orders: WorkloadCredentials;
const reports: UnreachableReport[] = [];

/** The control plane, with a hook that keeps what guards say of outages. */
function start(port = 0): Promise<RunningControlPlane> {
  return startControlPlane({
    ca,
    store,
    port,
    extensions: [() => ({ onUnreachable: (report) => reports.push(report) })],
  });
}

before(async () => {
  ca = await openWorkloadCa({ trustDomain: TD, keyDir: join(scratch, 'keys') });
  store = openSqliteStore(join(scratch, 'cp.db'));
  controlPlane = await start();
  orders = await joinControlPlane({
    url: controlPlane.url,
    trustDomain: TD,
    joinToken: (await createJoinToken(store, ca, { service: 'orders', createdBy: 'cli' })).token,
    service: 'orders',
  });
});

after(async () => {
  await controlPlane.close();
  await store.close();
  rmSync(scratch, { recursive: true, force: true });
});

const status = () => ({
  service: 'orders',
  spiffeId: orders.spiffeId,
  routes: [],
  policyVersion: null,
  svidExpiresAt: orders.expiresAt.toISOString(),
  mode: 'enforce' as const,
  guardVersion: '0.1.0',
});
const tls = () => ({ cert: orders.chainPem, key: orders.keyPem, ca: orders.bundlePem });

it('after reports that got no answer, the first that gets through says since when, once', async () => {
  const heartbeat = startRegistryHeartbeat({
    url: controlPlane.url,
    trustDomain: TD,
    tls: tls(),
    guard: { status },
    intervalMs: 3_600_000,
  });
  try {
    await heartbeat.beat();
    assert.equal(heartbeat.unreachableSince, null);
    const { port } = new URL(controlPlane.url);
    await controlPlane.close();
    const downAt = Date.now();
    await assert.rejects(heartbeat.beat(), 'no control plane answers');
    await assert.rejects(heartbeat.beat());
    const since = heartbeat.unreachableSince;
    assert.ok(since !== null && since >= downAt, 'since the first report that got no answer');
    controlPlane = await start(Number(port));
    const backAt = Date.now();
    await heartbeat.beat();
    assert.equal(heartbeat.unreachableSince, null, 'reported');
    assert.deepEqual(
      reports.map(({ spiffeId, service }) => ({ spiffeId, service })),
      [{ spiffeId: orders.spiffeId, service: 'orders' }],
      'the SVID says who',
    );
    assert.equal(reports[0]?.since, since);
    assert.ok((reports[0]?.until ?? 0) >= backAt, 'until the report that got through');
    await heartbeat.beat();
    assert.equal(reports.length, 1, 'once');
  } finally {
    await heartbeat.stop();
  }
});

/** One heartbeat of orders that says it could not reach the control plane from `since` to `until`. */
async function heartbeatClaiming(since: string, until: string): Promise<{ status: number; text: string }> {
  const client = new Agent({ connect: { ...tls(), checkServerIdentity: () => undefined } });
  try {
    const response = await request(`${controlPlane.url}/v1/registry/heartbeat`, {
      method: 'POST',
      dispatcher: client,
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({
        routes: [],
        policyVersion: null,
        svidExpiresAt: orders.expiresAt.toISOString(),
        mode: 'enforce',
        guardVersion: '0.1.0',
        unreachable: { since, until },
      }),
    });
    return { status: response.statusCode, text: await response.body.text() };
  } finally {
    await client.close();
  }
}

it('refuses a window that ends before it begins, and stores nothing of that report', async () => {
  const before = (await store.services()).find((entry) => entry.service === 'orders')?.lastSeen;
  const answer = await heartbeatClaiming('2026-01-02T00:00:00.000Z', '2026-01-01T00:00:00.000Z');
  assert.equal(answer.status, 400);
  assert.match(answer.text, /unreachable\.since must be a date no later than unreachable\.until/);
  assert.equal((await store.services()).find((entry) => entry.service === 'orders')?.lastSeen, before);
});

it("cuts a claimed window to the time since the guard's last report: no outage of all time", async () => {
  const lastSeen = (await store.services()).find((entry) => entry.spiffeId === orders.spiffeId)?.lastSeen ?? 0;
  assert.equal((await heartbeatClaiming('2020-01-01T00:00:00.000Z', '2999-01-01T00:00:00.000Z')).status, 204);
  const claimed = reports.at(-1);
  assert.equal(claimed?.since, lastSeen);
  assert.ok((claimed?.until ?? Infinity) <= Date.now());
});

it('a guard without an entry (it deregistered first) is believed for one silence, not since the date it claims', async () => {
  const client = new Agent({ connect: { ...tls(), checkServerIdentity: () => undefined } });
  const post = async (path: string, body?: unknown) => {
    const response = await request(`${controlPlane.url}${path}`, {
      method: 'POST',
      dispatcher: client,
      ...(body === undefined ? {} : { headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) }),
    });
    assert.equal(response.statusCode, 204, await response.body.text());
  };
  try {
    for (const claimed of [
      { since: '1970-01-01T00:00:00.000Z', until: '2999-01-01T00:00:00.000Z' },
      { since: '2999-01-01T00:00:00.000Z', until: '2999-01-02T00:00:00.000Z' },
    ]) {
      await post('/v1/registry/deregister');
      assert.equal(
        (await store.services()).some((entry) => entry.spiffeId === orders.spiffeId),
        false,
        'no entry',
      );
      const sentAt = Date.now();
      await post('/v1/registry/heartbeat', {
        routes: [],
        policyVersion: null,
        svidExpiresAt: orders.expiresAt.toISOString(),
        mode: 'enforce',
        guardVersion: '0.1.0',
        unreachable: claimed,
      });
      const told = reports.at(-1);
      assert.ok(
        told !== undefined && told.since >= sentAt - STALE_AFTER_MS,
        `since ${told?.since}: at most ${STALE_AFTER_MS} ms before the report`,
      );
      assert.ok(told.since <= told.until && told.until <= Date.now(), `until ${told.until}: no later than now`);
    }
  } finally {
    await client.close();
  }
});

it('a clean stop deregisters; nobody else can deregister a guard', async () => {
  const heartbeat = startRegistryHeartbeat({
    url: controlPlane.url,
    trustDomain: TD,
    tls: tls(),
    guard: { status },
    intervalMs: 3_600_000,
  });
  await heartbeat.beat();
  const anonymous = new Agent({ connect: { ca: ca.bundlePem, checkServerIdentity: () => undefined } });
  try {
    const response = await request(`${controlPlane.url}/v1/registry/deregister`, {
      method: 'POST',
      dispatcher: anonymous,
    });
    assert.equal(response.statusCode, 401);
    await response.body.dump();
  } finally {
    await anonymous.close();
  }
  assert.equal(
    (await store.services()).some((entry) => entry.spiffeId === orders.spiffeId),
    true,
    'still registered',
  );
  await heartbeat.deregister();
  assert.equal(
    (await store.services()).some((entry) => entry.spiffeId === orders.spiffeId),
    false,
    'gone',
  );
});

it('a report asked for while the guard deregisters (a policy event on the closing stream) does not register it again', async () => {
  const heartbeat = startRegistryHeartbeat({
    url: controlPlane.url,
    trustDomain: TD,
    tls: tls(),
    guard: { status },
    intervalMs: 3_600_000,
  });
  await heartbeat.beat();
  const leaving = heartbeat.deregister();
  await heartbeat.beat();
  await leaving;
  await heartbeat.beat();
  assert.equal(
    (await store.services()).some((entry) => entry.spiffeId === orders.spiffeId),
    false,
    'gone, and stays gone',
  );
});

it('a deregistration the control plane does not answer gives up after 3 s: a stopping service is not held up', async () => {
  const registered = startRegistryHeartbeat({
    url: controlPlane.url,
    trustDomain: TD,
    tls: tls(),
    guard: { status },
    intervalMs: 3_600_000,
  });
  await registered.beat();
  await registered.stop();
  const { port } = new URL(controlPlane.url);
  await controlPlane.close();
  // A stalled control plane: connections are taken, and nothing ever answers.
  const held = new Set<Socket>();
  const stalled = createServer((socket) => {
    held.add(socket);
  });
  await new Promise<void>((resolve) => stalled.listen(Number(port), '127.0.0.1', resolve));
  // Its first report (sent at start) hangs; the deregistration waits for it, then for its own answer.
  const heartbeat = startRegistryHeartbeat({
    url: controlPlane.url,
    trustDomain: TD,
    tls: tls(),
    guard: { status },
    intervalMs: 3_600_000,
  });
  try {
    const started = Date.now();
    await assert.rejects(heartbeat.deregister(), /timeout|aborted/i);
    // Well under the 10 s connect timeout it would otherwise wait for.
    assert.ok(Date.now() - started < 9_000, `gave up after ${Date.now() - started} ms`);
    assert.equal(
      (await store.services()).some((entry) => entry.spiffeId === orders.spiffeId),
      true,
      'the entry stays: the monitor will report the silence',
    );
  } finally {
    for (const socket of held) socket.destroy();
    await new Promise((resolve) => stalled.close(resolve));
    controlPlane = await start(Number(port));
  }
});

it('a report every replica answers with 503 (cut from its store) counts as no answer: the outage is reported after', async () => {
  const heartbeat = startRegistryHeartbeat({
    url: controlPlane.url,
    trustDomain: TD,
    tls: tls(),
    guard: { status },
    intervalMs: 3_600_000,
  });
  const recordHeartbeat = store.recordHeartbeat;
  try {
    await heartbeat.beat();
    assert.equal(heartbeat.unreachableSince, null);
    const before = reports.length;
    // The control plane runs, but cannot reach its store: 503 LOCKSTEP_CP_STORE, on which clients ask another.
    store.recordHeartbeat = async () => {
      throw Object.assign(new Error('connect ECONNREFUSED 127.0.0.1:5432'), { code: 'ECONNREFUSED' });
    };
    const cutAt = Date.now();
    await assert.rejects(heartbeat.beat(), /\(503\)/);
    const since = heartbeat.unreachableSince;
    assert.ok(since !== null && since >= cutAt, 'unreachable since that report');
    store.recordHeartbeat = recordHeartbeat;
    await heartbeat.beat();
    assert.equal(heartbeat.unreachableSince, null, 'reported');
    assert.equal(reports.length, before + 1, 'the outage, once');
    assert.equal(reports.at(-1)?.since, since);
  } finally {
    store.recordHeartbeat = recordHeartbeat;
    await heartbeat.stop();
  }
});
