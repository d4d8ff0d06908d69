import assert from 'node:assert/strict';
import { X509Certificate } from 'node:crypto';
import { chmodSync, copyFileSync, mkdtempSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { connect, createServer, type TLSSocket } from 'node:tls';
import { after, before, describe, it } from 'node:test';
import { ControlPlaneError } from '../errors.ts';
import { issueSvidFromCsr } from './issue-svid.ts';
import { KeyPermissionError } from './key-files.ts';
import { keyPem, makeCsr, workloadKeys } from './test-support.ts';
import { openWorkloadCa, type WorkloadCa } from './workload-ca.ts';

const TD = 'shop.test';
const scratch = mkdtempSync(join(tmpdir(), 'lockstep-ca-'));
let ca: WorkloadCa;
const created: string[] = [];

before(async () => {
  ca = await openWorkloadCa({
    trustDomain: TD,
    keyDir: join(scratch, 'ca'),
    onCreated: (message) => created.push(message),
  });
});
after(() => rmSync(scratch, { recursive: true, force: true }));

function refusedFor(rule: RegExp) {
  return (error: unknown) =>
    error instanceof ControlPlaneError && error.code === 'LOCKSTEP_CP_CSR_INVALID' && rule.test(error.message);
}

describe('workload CA', () => {
  it('creates its keys once, says so, keeps them private, and loads them on the next start', async () => {
    assert.equal(created.length, 1);
    assert.match(created[0] as string, /NEW workload CA.*development material/);
    for (const file of ['root.key.pem', 'root.pem', 'intermediate.key.pem', 'intermediate.pem']) {
      assert.equal(statSync(join(scratch, 'ca', file)).mode & 0o777, 0o600, file);
    }
    assert.equal(statSync(join(scratch, 'ca')).mode & 0o777, 0o700);
    const again = await openWorkloadCa({
      trustDomain: TD,
      keyDir: join(scratch, 'ca'),
      onCreated: (message) => created.push(message),
    });
    assert.equal(created.length, 1, 'no new CA on the second start');
    assert.equal(again.bundleHash, ca.bundleHash);
    assert.equal(again.bundlePem, ca.bundlePem);
  });

  it('refuses to start with a key file or directory others can read, and says how to fix it', async () => {
    const dir = join(scratch, 'loose');
    await openWorkloadCa({ trustDomain: TD, keyDir: dir });
    chmodSync(join(dir, 'intermediate.key.pem'), 0o644);
    await assert.rejects(
      openWorkloadCa({ trustDomain: TD, keyDir: dir }),
      (error: unknown) => error instanceof KeyPermissionError && /chmod 600/.test(error.message),
    );
    chmodSync(join(dir, 'intermediate.key.pem'), 0o600);
    chmodSync(dir, 0o755);
    await assert.rejects(
      openWorkloadCa({ trustDomain: TD, keyDir: dir }),
      (error: unknown) => error instanceof KeyPermissionError && /chmod 700/.test(error.message),
    );
  });

  it('refuses an incomplete key directory instead of silently creating a second CA', async () => {
    const dir = join(scratch, 'partial');
    await openWorkloadCa({ trustDomain: TD, keyDir: dir });
    rmSync(join(dir, 'intermediate.key.pem'));
    await assert.rejects(openWorkloadCa({ trustDomain: TD, keyDir: dir }), /incomplete/);
  });

  it('refuses an intermediate that the root did not sign', async () => {
    const dir = join(scratch, 'mixed');
    const other = join(scratch, 'other');
    await openWorkloadCa({ trustDomain: TD, keyDir: dir });
    await openWorkloadCa({ trustDomain: TD, keyDir: other });
    // Another CA's root in place of ours: the intermediate no longer chains to it.
    copyFileSync(join(other, 'root.pem'), join(dir, 'root.pem'));
    await assert.rejects(openWorkloadCa({ trustDomain: TD, keyDir: dir }), /not signed by root\.pem/);
  });
});

describe('issueSvidFromCsr', () => {
  it('issues an X.509-SVID: one URI SAN, CA=false, digitalSignature, server+client auth, 1 h, chained to the bundle', async () => {
    const { csrPem } = await makeCsr({ uris: [`spiffe://${TD}/svc/orders`] });
    const svid = await issueSvidFromCsr(ca, { csrPem, service: 'orders' });
    const [leafPem] = svid.chainPem.split(/(?<=-----END CERTIFICATE-----)\n/);
    const leaf = new X509Certificate(leafPem as string);
    const intermediate = new X509Certificate(ca.intermediatePem);
    const root = new X509Certificate(ca.bundlePem);
    assert.equal(leaf.subjectAltName, `URI:spiffe://${TD}/svc/orders`);
    assert.equal(leaf.ca, false);
    assert.deepEqual([...(leaf.keyUsage ?? [])].sort(), ['1.3.6.1.5.5.7.3.1', '1.3.6.1.5.5.7.3.2']);
    assert.ok(leaf.checkIssued(intermediate) && leaf.verify(intermediate.publicKey));
    assert.ok(intermediate.checkIssued(root) && intermediate.verify(root.publicKey));
    const lifetime = new Date(leaf.validTo).getTime() - new Date(leaf.validFrom).getTime();
    assert.ok(Math.abs(lifetime - (3600_000 + 60_000)) < 2_000, `1 h from now, backdated a minute; got ${lifetime} ms`);
    assert.equal(svid.spiffeId, `spiffe://${TD}/svc/orders`);
    assert.equal(leaf.serialNumber.toLowerCase(), svid.serial);
  });

  it('takes a CSR without any SAN and sets the SPIFFE ID itself', async () => {
    const { csrPem } = await makeCsr();
    const svid = await issueSvidFromCsr(ca, { csrPem, service: 'payments' });
    assert.equal(new X509Certificate(svid.chainPem).subjectAltName, `URI:spiffe://${TD}/svc/payments`);
  });

  it('issues certificates that two workloads use for mutual TLS against the trust bundle', async () => {
    const server = await workloadCredentials('orders');
    const client = await workloadCredentials('gateway');
    const tlsServer = createServer(
      { ...server, ca: ca.bundlePem, requestCert: true, rejectUnauthorized: true, minVersion: 'TLSv1.3' },
      (socket) => socket.end((socket.getPeerCertificate().subjectaltname ?? '') + '\n'),
    );
    await new Promise<void>((resolve) => tlsServer.listen(0, '127.0.0.1', resolve));
    try {
      const port = (tlsServer.address() as { port: number }).port;
      const peer = await new Promise<string>((resolve, reject) => {
        const socket: TLSSocket = connect(
          { host: '127.0.0.1', port, ...client, ca: ca.bundlePem, checkServerIdentity: () => undefined },
          () => {
            let data = '';
            socket.on('data', (chunk: Buffer) => {
              data += chunk.toString();
            });
            socket.on('end', () => resolve(data.trim()));
          },
        );
        socket.on('error', reject);
      });
      assert.equal(peer, `URI:spiffe://${TD}/svc/gateway`);
    } finally {
      tlsServer.close();
    }
  });

  // The bad-input cases of the issue: each must be refused.
  it('refuses a CSR for a SPIFFE ID other than the proven service', async () => {
    const { csrPem } = await makeCsr({ uris: [`spiffe://${TD}/svc/payments`] });
    await assert.rejects(
      issueSvidFromCsr(ca, { csrPem, service: 'orders' }),
      refusedFor(/may only be spiffe:\/\/shop\.test\/svc\/orders/),
    );
  });

  it('refuses a CSR for another trust domain', async () => {
    const { csrPem } = await makeCsr({ uris: ['spiffe://evil.test/svc/orders'] });
    await assert.rejects(issueSvidFromCsr(ca, { csrPem, service: 'orders' }), refusedFor(/may only be/));
  });

  it('refuses a CSR with extra SANs (a second URI, or a DNS name)', async () => {
    const twoUris = await makeCsr({ uris: [`spiffe://${TD}/svc/orders`, `spiffe://${TD}/svc/payments`] });
    await assert.rejects(
      issueSvidFromCsr(ca, { csrPem: twoUris.csrPem, service: 'orders' }),
      refusedFor(/exactly one URI SAN/),
    );
    const withDns = await makeCsr({ uris: [`spiffe://${TD}/svc/orders`], dns: ['orders.internal'] });
    await assert.rejects(
      issueSvidFromCsr(ca, { csrPem: withDns.csrPem, service: 'orders' }),
      refusedFor(/exactly one URI SAN/),
    );
    const dnsOnly = await makeCsr({ dns: ['orders.internal'] });
    await assert.rejects(
      issueSvidFromCsr(ca, { csrPem: dnsOnly.csrPem, service: 'orders' }),
      refusedFor(/exactly one URI SAN/),
    );
  });

  it('refuses a CSR that asks for a CA certificate', async () => {
    const { csrPem } = await makeCsr({ uris: [`spiffe://${TD}/svc/orders`], ca: true });
    await assert.rejects(issueSvidFromCsr(ca, { csrPem, service: 'orders' }), refusedFor(/CA=true/));
  });

  it('refuses a CSR whose signature does not verify (no proof of possession)', async () => {
    const mine = await workloadKeys();
    const someoneElses = await workloadKeys();
    const { csrPem } = await makeCsr({ keys: { publicKey: someoneElses.publicKey, privateKey: mine.privateKey } });
    await assert.rejects(issueSvidFromCsr(ca, { csrPem, service: 'orders' }), refusedFor(/does not verify/));
  });

  it('refuses keys other than ECDSA P-256, and what is not a CSR at all', async () => {
    for (const algorithm of ['RSA', 'P-384'] as const) {
      const { csrPem } = await makeCsr({ keys: await workloadKeys(algorithm) });
      await assert.rejects(
        issueSvidFromCsr(ca, { csrPem, service: 'orders' }),
        refusedFor(/must be ECDSA P-256/),
        algorithm,
      );
    }
    await assert.rejects(
      issueSvidFromCsr(ca, { csrPem: ca.bundlePem, service: 'orders' }),
      refusedFor(/not a PKCS#10/),
    );
    await assert.rejects(
      issueSvidFromCsr(ca, { csrPem: 'x'.repeat(9000), service: 'orders' }),
      refusedFor(/at most 8192 bytes/),
    );
  });

  it('refuses service names that are not DNS labels (no path tricks into the SPIFFE ID)', async () => {
    const { csrPem } = await makeCsr();
    for (const service of ['Orders', 'orders/admin', '../admin', '', 'a'.repeat(64), 'orders%2fadmin']) {
      await assert.rejects(
        issueSvidFromCsr(ca, { csrPem, service }),
        refusedFor(/not a lower-case DNS label/),
        service,
      );
    }
  });
});

async function workloadCredentials(service: string): Promise<{ cert: string; key: string }> {
  const { csrPem, keys } = await makeCsr();
  const svid = await issueSvidFromCsr(ca, { csrPem, service });
  return { cert: svid.chainPem, key: await keyPem(keys.privateKey) };
}
