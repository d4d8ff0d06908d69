import assert from 'node:assert/strict';
import { X509Certificate } from 'node:crypto';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { issueSvidFromCsr } from './issue-svid.ts';
import { fileKeyVault } from './key-vault.ts';
import { makeCsr, sharedMemoryVault } from './test-support.ts';
import { openWorkloadCa, RootRotationError, type WorkloadCa } from './workload-ca.ts';

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

/** Resolves at the next bundle change `ca` hears of. */
function nextChange(ca: WorkloadCa): Promise<void> {
  return new Promise((resolve) => {
    const stop = ca.onBundleChange(() => {
      stop();
      resolve();
    });
  });
}

/** True when a leaf of `chainPem` chains, through its intermediate, to a root of `bundlePem`. */
function chainsTo(chainPem: string, bundlePem: string): boolean {
  const [leaf, intermediate] = chainPem.match(/-----BEGIN CERTIFICATE-----[^-]+-----END CERTIFICATE-----/g) ?? [];
  const bundle = bundlePem.match(/-----BEGIN CERTIFICATE-----[^-]+-----END CERTIFICATE-----/g) ?? [];
  if (leaf === undefined || intermediate === undefined) return false;
  const [leafCert, intermediateCert] = [new X509Certificate(leaf), new X509Certificate(intermediate)];
  return (
    leafCert.verify(intermediateCert.publicKey) &&
    bundle.some((pem) => {
      const root = new X509Certificate(pem);
      return intermediateCert.checkIssued(root) && intermediateCert.verify(root.publicKey);
    })
  );
}

async function leafOf(ca: WorkloadCa): Promise<string> {
  const { csrPem } = await makeCsr({ uris: ['spiffe://shop.test/svc/orders'] });
  return (await issueSvidFromCsr(ca, { csrPem, service: 'orders' })).chainPem;
}

describe('workload CA shared by replicas (one vault)', () => {
  it('is one CA; a rotation prepared or activated on one replica reaches the other', async () => {
    const vault = sharedMemoryVault();
    const created: string[] = [];
    const onCreated = (message: string) => created.push(message);
    const [a, b] = await Promise.all([
      openWorkloadCa({ trustDomain: 'shop.test', vault: vault.replica(), onCreated }),
      openWorkloadCa({ trustDomain: 'shop.test', vault: vault.replica(), onCreated }),
    ]);
    assert.equal(created.length, 1, 'opened at once on an empty vault: created once');
    assert.equal(b.bundleHash, a.bundleHash);
    const stored = JSON.parse(vault.documents.get('ca.json')?.text ?? '{}') as Record<string, unknown>;
    assert.deepEqual(Object.keys(stored.current as object).sort(), [
      'intermediateKeyPem',
      'intermediatePem',
      'rootPem',
    ]);
    assert.equal(
      vault.documents.get('ca.json')?.text.match(/BEGIN PRIVATE KEY/g)?.length,
      1,
      "the intermediate's key only: the root's private key is not kept in the vault",
    );
    assert.ok(chainsTo(await leafOf(a), b.bundlePem), "A's leaf verifies against B's bundle");
    const signerBefore = b.signer;
    let changesHeardByB = 0;
    b.onBundleChange(() => (changesHeardByB += 1));

    const prepared = nextChange(b);
    await a.prepareRootRotation();
    await prepared;
    assert.equal(roots(b.bundlePem), 2, "B's bundle has both roots");
    assert.equal(b.bundleHash, a.bundleHash);
    assert.equal(b.rootRotation().phase, 'prepared');
    assert.equal(b.signer, signerBefore, 'the intermediate did not change: the same signer object');
    await assert.rejects(b.prepareRootRotation(), /prepared already/);

    const activated = nextChange(b);
    await a.activateNextRoot();
    await activated;
    assert.notEqual(b.signer, signerBefore);
    assert.equal(b.signer.cert.serialNumber, a.signer.cert.serialNumber, 'B signs with the new intermediate');
    assert.equal(b.intermediatePem, a.intermediatePem);
    assert.deepEqual(
      b.rootRotation().roots.map((root) => root.role),
      ['current', 'retiring'],
    );
    assert.equal(b.bundleHash, a.bundleHash);
    assert.ok(chainsTo(await leafOf(a), b.bundlePem), "A's leaf from the new intermediate verifies against B's bundle");
    assert.ok(chainsTo(await leafOf(b), a.bundlePem));
    await assert.rejects(b.activateNextRoot(), RootRotationError);

    assert.equal(changesHeardByB, 2, 'one bundle change per step, none for nothing');

    const reopened = await openWorkloadCa({ trustDomain: 'shop.test', vault: vault.replica() });
    assert.equal(reopened.bundleHash, a.bundleHash, 'a replica started later loads the same CA');
    for (const ca of [a, b, reopened]) ca.close();
  });

  it('two replicas preparing at once prepare one rotation; the other is refused as prepared already', async () => {
    const vault = sharedMemoryVault();
    const a = await openWorkloadCa({ trustDomain: 'shop.test', vault: vault.replica() });
    const b = await openWorkloadCa({ trustDomain: 'shop.test', vault: vault.replica() });
    const outcomes = await Promise.allSettled([a.prepareRootRotation(), b.prepareRootRotation()]);
    assert.deepEqual(outcomes.map((outcome) => outcome.status).sort(), ['fulfilled', 'rejected']);
    const refusal = outcomes.find((outcome) => outcome.status === 'rejected');
    assert.ok(refusal?.reason instanceof RootRotationError && /prepared already/.test(refusal.reason.message));
    assert.equal(vault.documents.get('ca.json')?.generation, 1);
    assert.equal(b.bundleHash, a.bundleHash);
    assert.equal(roots(a.bundlePem), 2);
    a.close();
    b.close();
  });

  it('a file vault keeps the key directory layout of earlier versions', async () => {
    const keyDir = join(scratch, 'file-vault');
    const ca = await openWorkloadCa({ trustDomain: 'shop.test', vault: fileKeyVault(keyDir) });
    for (const file of ['root.pem', 'root.key.pem', 'intermediate.pem', 'intermediate.key.pem'])
      assert.ok(existsSync(join(keyDir, file)), file);
    assert.equal(existsSync(join(keyDir, 'ca.json')), false);
    const again = await openWorkloadCa({ trustDomain: 'shop.test', keyDir });
    assert.equal(again.bundleHash, ca.bundleHash);
  });
});
