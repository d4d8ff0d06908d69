import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { openWorkloadCa, RootRotationError } from './workload-ca.ts';

const scratch = mkdtempSync(join(tmpdir(), 'lockstep-ca-'));
after(() => rmSync(scratch, { recursive: true, force: true }));
const roots = (pem: string) => pem.match(/-----BEGIN CERTIFICATE-----/g)?.length ?? 0;

describe('workload CA root rotation', () => {
  it('steps prepare → activate → retire, survives a restart in between, and refuses steps out of order', async () => {
    let now = Date.now();
    const keyDir = join(scratch, 'keys');
    const options = { trustDomain: 'shop.test', keyDir, retireAfterMs: 3_600_000, now: () => now };
    const ca = await openWorkloadCa(options);
    const firstHash = ca.bundleHash;
    let changes = 0;
    ca.onBundleChange(() => {
      changes += 1;
    });
    await assert.rejects(ca.activateNextRoot(), RootRotationError);

    await ca.prepareRootRotation();
    assert.equal(roots(ca.bundlePem), 2);
    assert.notEqual(ca.bundleHash, firstHash, 'join tokens pin the bundle of their day');
    await assert.rejects(ca.prepareRootRotation(), /prepared already/);
    const signerBefore = ca.signer;

    const reopened = await openWorkloadCa(options);
    assert.equal(reopened.rootRotation().phase, 'prepared', 'a prepared rotation survives a restart');
    assert.equal(reopened.bundlePem, ca.bundlePem);

    await ca.activateNextRoot();
    assert.notEqual(ca.signer, signerBefore, 'the new intermediate signs');
    assert.equal(existsSync(join(keyDir, 'next')), false);
    assert.deepEqual(
      ca.rootRotation().roots.map((root) => root.role),
      ['current', 'retiring'],
    );
    assert.equal(changes, 2);

    const restarted = await openWorkloadCa(options);
    assert.equal(restarted.signer.cert.subject, ca.signer.cert.subject);
    assert.equal(roots(restarted.bundlePem), 2, 'the retiring root is remembered');

    now += 3_600_001;
    assert.equal(roots(ca.bundlePem), 1, 'the old root leaves the bundle once its SVIDs have expired');
    assert.deepEqual(
      ca.rootRotation().roots.map((root) => root.role),
      ['current'],
    );
  });
});
