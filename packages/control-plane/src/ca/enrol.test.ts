import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { ControlPlaneError, type ControlPlaneErrorCode } from '../errors.ts';
import { openSqliteStore } from '../store/sqlite-store.ts';
import type { ControlPlaneStore } from '../store/store.ts';
import { bootstrapWorkload, renewWorkload } from './enrol.ts';
import { createJoinToken } from './join-tokens.ts';
import { makeCsr } from './test-support.ts';
import { openWorkloadCa, type WorkloadCa } from './workload-ca.ts';

const scratch = mkdtempSync(join(tmpdir(), 'lockstep-enrol-'));
let ca: WorkloadCa;
let store: ControlPlaneStore;
before(async () => {
  ca = await openWorkloadCa({ trustDomain: 'shop.test', keyDir: join(scratch, 'ca') });
  store = openSqliteStore(':memory:');
});
after(async () => {
  await store.close();
  rmSync(scratch, { recursive: true, force: true });
});

const refusedWith = (code: ControlPlaneErrorCode) => (error: unknown) =>
  error instanceof ControlPlaneError && error.code === code;

describe('enrolment', () => {
  it('bootstraps with a join token, renews with the SVID, and records both issuances', async () => {
    const { token } = await createJoinToken(store, ca, { service: 'inventory', createdBy: 'cli' });
    const first = await bootstrapWorkload(store, ca, {
      joinToken: token,
      service: 'inventory',
      csrPem: (await makeCsr()).csrPem,
    });
    const renewed = await renewWorkload(store, ca, { peerSpiffeId: first.spiffeId, csrPem: (await makeCsr()).csrPem });
    assert.equal(renewed.spiffeId, 'spiffe://shop.test/svc/inventory');
    assert.deepEqual(
      (await store.issuedSvids(first.spiffeId)).map((svid) => [svid.serial, svid.via]),
      [
        [first.serial, 'join'],
        [renewed.serial, 'renew'],
      ],
    );
  });

  it('refuses to renew a revoked workload, and to bootstrap it again with a fresh token (which stays unspent)', async () => {
    const { token } = await createJoinToken(store, ca, { service: 'billing', createdBy: 'cli' });
    const svid = await bootstrapWorkload(store, ca, {
      joinToken: token,
      service: 'billing',
      csrPem: (await makeCsr()).csrPem,
    });
    await store.addRevocation({
      kind: 'spiffeId',
      value: svid.spiffeId,
      reason: 'key stolen',
      actor: 'spiffe://shop.test/admin/alice',
      at: Date.now(),
    });
    await assert.rejects(
      renewWorkload(store, ca, { peerSpiffeId: svid.spiffeId, csrPem: (await makeCsr()).csrPem }),
      refusedWith('LOCKSTEP_CP_WORKLOAD_REVOKED'),
    );
    const fresh = await createJoinToken(store, ca, { service: 'billing', createdBy: 'cli' });
    await assert.rejects(
      bootstrapWorkload(store, ca, { joinToken: fresh.token, service: 'billing', csrPem: (await makeCsr()).csrPem }),
      refusedWith('LOCKSTEP_CP_WORKLOAD_REVOKED'),
    );
    assert.equal((await store.issuedSvids(svid.spiffeId)).length, 1, 'nothing issued after the revocation');
  });

  it('renews only workloads of its own trust domain, as the SPIFFE ID they proved', async () => {
    await assert.rejects(
      renewWorkload(store, ca, { peerSpiffeId: 'spiffe://evil.test/svc/orders', csrPem: (await makeCsr()).csrPem }),
      refusedWith('LOCKSTEP_CP_CSR_INVALID'),
    );
    await assert.rejects(
      renewWorkload(store, ca, { peerSpiffeId: 'spiffe://shop.test/admin/alice', csrPem: (await makeCsr()).csrPem }),
      refusedWith('LOCKSTEP_CP_CSR_INVALID'),
    );
    const asOther = await makeCsr({ uris: ['spiffe://shop.test/svc/payments'] });
    await assert.rejects(
      renewWorkload(store, ca, { peerSpiffeId: 'spiffe://shop.test/svc/orders', csrPem: asOther.csrPem }),
      refusedWith('LOCKSTEP_CP_CSR_INVALID'),
      'a renewal cannot change identity',
    );
  });

  it('issues nothing for a refused CSR and leaves the join token unspent for a corrected request', async () => {
    const { token } = await createJoinToken(store, ca, { service: 'search', createdBy: 'cli' });
    const bad = await makeCsr({ ca: true });
    await assert.rejects(
      bootstrapWorkload(store, ca, { joinToken: token, service: 'search', csrPem: bad.csrPem }),
      refusedWith('LOCKSTEP_CP_CSR_INVALID'),
    );
    assert.deepEqual(await store.issuedSvids('spiffe://shop.test/svc/search'), []);
    const svid = await bootstrapWorkload(store, ca, {
      joinToken: token,
      service: 'search',
      csrPem: (await makeCsr()).csrPem,
    });
    assert.equal(svid.spiffeId, 'spiffe://shop.test/svc/search');
    await assert.rejects(
      bootstrapWorkload(store, ca, { joinToken: token, service: 'search', csrPem: (await makeCsr()).csrPem }),
      refusedWith('LOCKSTEP_CP_JOIN_TOKEN_USED'),
    );
  });

  it('issues nothing with a spent, expired-looking or foreign join token', async () => {
    const { token } = await createJoinToken(store, ca, { service: 'mail', createdBy: 'cli' });
    await assert.rejects(
      bootstrapWorkload(store, ca, { joinToken: token, service: 'orders', csrPem: (await makeCsr()).csrPem }),
      refusedWith('LOCKSTEP_CP_JOIN_TOKEN_WRONG_SERVICE'),
    );
    await assert.rejects(
      bootstrapWorkload(store, ca, { joinToken: 'ljt1.x.y', service: 'mail', csrPem: (await makeCsr()).csrPem }),
      refusedWith('LOCKSTEP_CP_JOIN_TOKEN_INVALID'),
    );
    assert.deepEqual(await store.issuedSvids('spiffe://shop.test/svc/mail'), []);
    assert.deepEqual(await store.issuedSvids('spiffe://shop.test/svc/orders'), []);
  });
});
