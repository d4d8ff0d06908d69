/**
 * Enrolment over real TLS on loopback: a workload joins with a one-time token (bundle pinned by the
 * token), renews over mTLS with the SVID it got, and every refusal arrives as a coded HTTP answer.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { Agent, request } from 'undici';
import {
  createJoinToken, openSqliteStore, openWorkloadCa, startControlPlane,
  joinControlPlane, renewWithControlPlane, EnrolmentError,
  type ControlPlaneStore, type RunningControlPlane, type WorkloadCa,
} from '../src/index.ts';

const TD = 'shop.test';
const scratch = mkdtempSync(join(tmpdir(), 'lockstep-enrolment-'));
let ca: WorkloadCa;
let store: ControlPlaneStore;
let server: RunningControlPlane;

before(async () => {
  ca = await openWorkloadCa({ trustDomain: TD, keyDir: join(scratch, 'ca') });
  store = openSqliteStore(join(scratch, 'cp.db'));
  server = await startControlPlane({ ca, store });
});
after(async () => {
  await server.close();
  await store.close();
  rmSync(scratch, { recursive: true, force: true });
});

const token = async (service: string) => (await createJoinToken(store, ca, { service, createdBy: 'cli' })).token;
const refused = (code: string, status: number) => (error: unknown) => error instanceof EnrolmentError && error.code === code && error.status === status;

/** A raw call, for requests the client library would never make. */
async function raw(path: string, body: unknown, tls: { cert?: string; key?: string } = {}): Promise<{ status: number; body: Record<string, unknown> }> {
  const agent = new Agent({ connect: { ca: ca.bundlePem, ...tls, checkServerIdentity: () => undefined } });
  try {
    const response = await request(`${server.url}${path}`, { method: 'POST', dispatcher: agent, headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });
    return { status: response.statusCode, body: await response.body.json() as Record<string, unknown> };
  } finally {
    await agent.close();
  }
}

describe('enrolment over TLS', () => {
  it('joins with a token, then renews over mTLS with the SVID it got', async () => {
    const joined = await joinControlPlane({ url: server.url, trustDomain: TD, joinToken: await token('orders'), service: 'orders' });
    assert.equal(joined.spiffeId, `spiffe://${TD}/svc/orders`);
    assert.equal(joined.bundlePem, ca.bundlePem);
    assert.ok(joined.expiresAt.getTime() > Date.now() + 50 * 60_000);
    const renewed = await renewWithControlPlane({ url: server.url, trustDomain: TD, current: joined, bundlePem: joined.bundlePem });
    assert.equal(renewed.spiffeId, joined.spiffeId);
    assert.notEqual(renewed.chainPem, joined.chainPem);
    assert.notEqual(renewed.keyPem, joined.keyPem, 'a renewal comes with a new key');
    assert.deepEqual((await store.issuedSvids(joined.spiffeId)).map((svid) => svid.via), ['join', 'renew']);
  });

  it('refuses a reused token, a token for another service, and an unknown token', async () => {
    const once = await token('payments');
    await joinControlPlane({ url: server.url, trustDomain: TD, joinToken: once, service: 'payments' });
    await assert.rejects(joinControlPlane({ url: server.url, trustDomain: TD, joinToken: once, service: 'payments' }), refused('LOCKSTEP_CP_JOIN_TOKEN_USED', 401));
    await assert.rejects(joinControlPlane({ url: server.url, trustDomain: TD, joinToken: await token('payments'), service: 'orders' }), refused('LOCKSTEP_CP_JOIN_TOKEN_WRONG_SERVICE', 403));
    await assert.rejects(joinControlPlane({ url: server.url, trustDomain: TD, joinToken: `ljt1.${ca.bundleHash}.${'x'.repeat(43)}`, service: 'orders' }), refused('LOCKSTEP_CP_JOIN_TOKEN_INVALID', 401));
  });

  it('sends nothing to a control plane whose bundle does not match the token (no trust on first use)', async () => {
    const otherCa = await openWorkloadCa({ trustDomain: TD, keyDir: join(scratch, 'impostor-ca') });
    const otherStore = openSqliteStore(':memory:');
    const impostor = await startControlPlane({ ca: otherCa, store: otherStore });
    try {
      const genuine = await token('inventory');
      await assert.rejects(joinControlPlane({ url: impostor.url, trustDomain: TD, joinToken: genuine, service: 'inventory' }), (error: unknown) => error instanceof EnrolmentError && error.code === 'LOCKSTEP_ENROL_BUNDLE_MISMATCH');
      const joined = await joinControlPlane({ url: server.url, trustDomain: TD, joinToken: genuine, service: 'inventory' });
      assert.equal(joined.spiffeId, `spiffe://${TD}/svc/inventory`, 'the token was never presented to the impostor');
    } finally {
      await impostor.close();
      await otherStore.close();
    }
  });

  it('renews only over mTLS with a valid SVID of this trust domain that is not revoked', async () => {
    const { csrPem } = await (await import('../src/ca/test-support.ts')).makeCsr();
    const none = await raw('/v1/renew', { csr: csrPem });
    assert.deepEqual([none.status, none.body.error], [401, 'LOCKSTEP_CP_PEER_UNAUTHENTICATED']);

    const foreignCa = await openWorkloadCa({ trustDomain: TD, keyDir: join(scratch, 'foreign-ca') });
    const foreignStore = openSqliteStore(':memory:');
    const foreign = await startControlPlane({ ca: foreignCa, store: foreignStore });
    const stranger = await joinControlPlane({ url: foreign.url, trustDomain: TD, joinToken: (await createJoinToken(foreignStore, foreignCa, { service: 'orders', createdBy: 'cli' })).token, service: 'orders' });
    await foreign.close();
    await foreignStore.close();
    const untrusted = await raw('/v1/renew', { csr: csrPem }, { cert: stranger.chainPem, key: stranger.keyPem });
    assert.deepEqual([untrusted.status, untrusted.body.error], [401, 'LOCKSTEP_CP_PEER_UNAUTHENTICATED'], 'an SVID from another CA');

    const victim = await joinControlPlane({ url: server.url, trustDomain: TD, joinToken: await token('reports'), service: 'reports' });
    await store.addRevocation({ kind: 'spiffeId', value: victim.spiffeId, reason: 'compromised', actor: 'cli', at: Date.now() });
    await assert.rejects(renewWithControlPlane({ url: server.url, trustDomain: TD, current: victim, bundlePem: victim.bundlePem }), refused('LOCKSTEP_CP_WORKLOAD_REVOKED', 403));
  });

  it('refuses bodies that are not what the endpoint takes', async () => {
    const extra = await raw('/v1/join', { joinToken: await token('orders'), service: 'orders', csr: 'x', admin: true });
    assert.deepEqual([extra.status, extra.body.error], [400, 'LOCKSTEP_CP_REQUEST_INVALID']);
    const wrongType = await raw('/v1/join', { joinToken: 1, service: 'orders', csr: 'x' });
    assert.deepEqual([wrongType.status, wrongType.body.error], [400, 'LOCKSTEP_CP_REQUEST_INVALID']);
    const badCsr = await raw('/v1/join', { joinToken: await token('orders'), service: 'orders', csr: 'not a csr' });
    assert.deepEqual([badCsr.status, badCsr.body.error], [400, 'LOCKSTEP_CP_CSR_INVALID']);
  });
});
