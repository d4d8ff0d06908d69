/**
 * The admin API over real mTLS: nothing administrative without an admin SVID, and every call —
 * allowed or refused — is an audit event of the guard's decision shape with the caller's SPIFFE ID.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { Agent, request } from 'undici';
import type { DecisionEvent } from '@lockstep/guard';
import {
  issueAdminCredentials,
  openSqliteStore,
  openWorkloadCa,
  startControlPlane,
  subscribeAdminActions,
  type AdminCredentials,
  type ControlPlaneStore,
  type RunningControlPlane,
  type WorkloadCa,
} from '../src/index.ts';
import { joinControlPlane } from '@lockstep/workload';

const TD = 'shop.test';
const scratch = mkdtempSync(join(tmpdir(), 'lockstep-admin-'));
let ca: WorkloadCa;
let store: ControlPlaneStore;
let server: RunningControlPlane;
let alice: AdminCredentials;
const events: DecisionEvent[] = [];
const unsubscribe = subscribeAdminActions((event) => events.push(event));

before(async () => {
  ca = await openWorkloadCa({ trustDomain: TD, keyDir: join(scratch, 'ca') });
  store = openSqliteStore(':memory:');
  server = await startControlPlane({ ca, store });
  alice = await issueAdminCredentials(ca, 'alice');
});
after(async () => {
  unsubscribe();
  await server.close();
  await store.close();
  rmSync(scratch, { recursive: true, force: true });
});

async function call(method: 'GET' | 'POST', path: string, body: unknown, tls: { cert?: string; key?: string } = {}) {
  const agent = new Agent({ connect: { ca: ca.bundlePem, ...tls, checkServerIdentity: () => undefined } });
  try {
    const response = await request(`${server.url}${path}`, {
      method,
      dispatcher: agent,
      ...(body === undefined ? {} : { headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) }),
    });
    return { status: response.statusCode, body: (await response.body.json()) as Record<string, unknown> };
  } finally {
    await agent.close();
  }
}
const asAdmin = { cert: () => ({ cert: alice.chainPem, key: alice.keyPem }) };

describe('admin API', () => {
  it('creates a join token for an administrator, and the token bootstraps that service', async () => {
    events.length = 0;
    const created = await call('POST', '/v1/admin/join-tokens', { service: 'orders', ttlSeconds: 120 }, asAdmin.cert());
    assert.equal(created.status, 200);
    assert.equal(created.body.service, 'orders');
    const joined = await joinControlPlane({
      url: server.url,
      trustDomain: TD,
      joinToken: String(created.body.token),
      service: 'orders',
    });
    assert.equal(joined.spiffeId, `spiffe://${TD}/svc/orders`);
    const [event] = events;
    assert.equal(events.length, 1);
    assert.deepEqual(
      {
        caller: event?.caller,
        action: event?.action,
        resource: event?.resource,
        decision: event?.decision,
        reason: event?.reason,
        service: event?.service,
      },
      {
        caller: `spiffe://${TD}/admin/alice`,
        action: 'admin:join-token.create',
        resource: 'orders',
        decision: 'allow',
        reason: 'LOCKSTEP_ALLOW',
        service: 'control-plane',
      },
    );
    assert.ok(
      !JSON.stringify(event).includes(String(created.body.token).split('.')[2] as string),
      'the token never reaches the audit trail',
    );
  });

  it('refuses every admin endpoint without a client certificate (401) and with a workload SVID (403), audited', async () => {
    const workloadToken = await call('POST', '/v1/admin/join-tokens', { service: 'gateway' }, asAdmin.cert());
    const workload = await joinControlPlane({
      url: server.url,
      trustDomain: TD,
      joinToken: String(workloadToken.body.token),
      service: 'gateway',
    });
    events.length = 0;
    const attempts: ['GET' | 'POST', string, unknown][] = [
      ['POST', '/v1/admin/join-tokens', { service: 'payments' }],
      ['POST', '/v1/admin/revocations', { kind: 'sub', value: 'alice', reason: 'x' }],
      ['GET', '/v1/admin/revocations', undefined],
    ];
    for (const [method, path, body] of attempts) {
      const anonymous = await call(method, path, body);
      assert.deepEqual(
        [anonymous.status, anonymous.body.error],
        [401, 'LOCKSTEP_CP_PEER_UNAUTHENTICATED'],
        `${method} ${path} anonymous`,
      );
      const asWorkload = await call(method, path, body, { cert: workload.chainPem, key: workload.keyPem });
      assert.deepEqual(
        [asWorkload.status, asWorkload.body.error],
        [403, 'LOCKSTEP_CP_ADMIN_REQUIRED'],
        `${method} ${path} as a workload`,
      );
    }
    assert.equal(events.length, 6);
    assert.ok(events.every((event) => event.decision === 'deny'));
    assert.deepEqual(
      events.filter((event) => event.caller === workload.spiffeId).map((event) => event.reason),
      Array(3).fill('LOCKSTEP_CP_ADMIN_REQUIRED'),
    );
    assert.deepEqual(
      events.filter((event) => event.caller === null).map((event) => event.reason),
      Array(3).fill('LOCKSTEP_CP_PEER_UNAUTHENTICATED'),
    );
  });

  it('revokes, and the revocation feed can be read from any position', async () => {
    const first = await call(
      'POST',
      '/v1/admin/revocations',
      { kind: 'sub', value: 'mallory', reason: 'account takeover' },
      asAdmin.cert(),
    );
    const second = await call(
      'POST',
      '/v1/admin/revocations',
      { kind: 'spiffeId', value: `spiffe://${TD}/svc/reports`, reason: 'compromised' },
      asAdmin.cert(),
    );
    assert.equal(first.status, 200);
    assert.equal(first.body.actor, `spiffe://${TD}/admin/alice`);
    const all = await call('GET', '/v1/admin/revocations', undefined, asAdmin.cert());
    assert.deepEqual(
      (all.body.revocations as { value: string }[]).map((entry) => entry.value),
      ['mallory', `spiffe://${TD}/svc/reports`],
    );
    const after = await call('GET', `/v1/admin/revocations?since=${String(first.body.seq)}`, undefined, asAdmin.cert());
    assert.deepEqual(
      (after.body.revocations as { seq: number }[]).map((entry) => entry.seq),
      [second.body.seq],
    );
  });

  it('refuses malformed admin requests', async () => {
    for (const [path, body] of [
      ['/v1/admin/join-tokens', { service: 'Orders/../x' }],
      ['/v1/admin/join-tokens', { service: 'orders', extra: 1 }],
      ['/v1/admin/join-tokens', { service: 'orders', ttlSeconds: 0 }],
      ['/v1/admin/revocations', { kind: 'everyone', value: 'x', reason: 'y' }],
      ['/v1/admin/revocations', { kind: 'sub', value: '', reason: 'y' }],
    ] as const) {
      const answer = await call('POST', path, body, asAdmin.cert());
      assert.deepEqual([answer.status, answer.body.error], [400, 'LOCKSTEP_CP_REQUEST_INVALID'], JSON.stringify(body));
    }
    const badSince = await call('GET', '/v1/admin/revocations?since=-1', undefined, asAdmin.cert());
    assert.deepEqual([badSince.status, badSince.body.error], [400, 'LOCKSTEP_CP_REQUEST_INVALID']);
  });
});
