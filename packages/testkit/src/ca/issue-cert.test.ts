import assert from 'node:assert/strict';
import { X509Certificate, createPrivateKey } from 'node:crypto';
import { before, describe, it } from 'node:test';
import { readX509Svid, SvidError } from '@lockstep/identity';
import { x509 } from '../lib/x509.ts';
import { createTestCa } from './create-test-ca.ts';
import type { TestCa } from './create-test-ca.ts';

function extensions(certPem: string) {
  const cert = new x509.X509Certificate(certPem);
  return {
    cert,
    basic: cert.getExtension(x509.BasicConstraintsExtension),
    keyUsage: cert.getExtension(x509.KeyUsagesExtension),
    eku: cert.getExtension(x509.ExtendedKeyUsageExtension),
    san: cert.getExtension(x509.SubjectAlternativeNameExtension),
  };
}

describe('issueSvid', () => {
  let ca: TestCa;
  before(async () => {
    ca = await createTestCa({ trustDomain: 'shop.test', intermediate: true });
  });

  it('issues an X.509-SVID: one URI SAN, CA=false and digitalSignature (critical), serverAuth + clientAuth', async () => {
    const svid = await ca.issueSvid({ service: 'orders' });
    assert.equal(svid.spiffeId, 'spiffe://shop.test/svc/orders');
    const { basic, keyUsage, eku, san } = extensions(svid.certPem);
    assert.deepEqual(san?.names.toJSON(), [{ type: 'url', value: 'spiffe://shop.test/svc/orders' }]);
    assert.equal(basic?.ca, false);
    assert.equal(basic?.critical, true);
    assert.equal(keyUsage?.usages, x509.KeyUsageFlags.digitalSignature);
    assert.equal(keyUsage?.critical, true);
    assert.deepEqual([...(eku?.usages ?? [])], [x509.ExtendedKeyUsage.serverAuth, x509.ExtendedKeyUsage.clientAuth]);
    // Node's own parser sees the same identity.
    assert.equal(new X509Certificate(svid.certPem).subjectAltName, 'URI:spiffe://shop.test/svc/orders');
  });

  it('generates a fresh P-256 key per SVID, exported as PKCS#8 PEM, matching the certificate', async () => {
    const [a, b] = await Promise.all([ca.issueSvid({ service: 'orders' }), ca.issueSvid({ service: 'orders' })]);
    assert.match(a.keyPem, /^-----BEGIN PRIVATE KEY-----\n/);
    assert.notEqual(a.keyPem, b.keyPem);
    const key = createPrivateKey(a.keyPem);
    assert.equal(key.asymmetricKeyDetails?.namedCurve, 'prime256v1');
    assert.equal(new X509Certificate(a.certPem).checkPrivateKey(key), true);
  });

  it('chains leaf → intermediate, and the chain verifies up to the root in the bundle', async () => {
    const svid = await ca.issueSvid({ service: 'orders' });
    const pems = svid.chainPem.match(/-----BEGIN CERTIFICATE-----[^-]+-----END CERTIFICATE-----/g) ?? [];
    assert.equal(pems.length, 2);
    const [leaf, intermediate] = pems.map((pem) => new X509Certificate(pem));
    const root = new X509Certificate(ca.bundlePem);
    assert.ok(leaf?.verify(intermediate!.publicKey));
    assert.ok(intermediate?.verify(root.publicKey));
    assert.ok(root.verify(root.publicKey));
    assert.equal(root.ca, true);
  });

  it('uses random positive serial numbers and the requested lifetime', async () => {
    const [a, b] = await Promise.all([
      ca.issueSvid({ service: 'orders', ttlSeconds: 600 }),
      ca.issueSvid({ service: 'orders' }),
    ]);
    assert.notEqual(a.serialNumber, b.serialNumber);
    for (const svid of [a, b]) assert.ok(Number.parseInt(svid.serialNumber.slice(0, 2), 16) < 0x80, svid.serialNumber);
    const lifetime = a.notAfter.getTime() - Date.now();
    assert.ok(lifetime > 590_000 && lifetime <= 600_000, `lifetime ${lifetime} ms`);
  });

  it('issues SVIDs that pass every X509-SVID leaf rule of @lockstep/identity, up to the 24 h maximum', async () => {
    for (const ttlSeconds of [undefined, 86_340]) {
      const svid = await ca.issueSvid({ service: 'orders', ...(ttlSeconds === undefined ? {} : { ttlSeconds }) });
      const der = new X509Certificate(svid.certPem).raw;
      assert.equal(readX509Svid(der, { trustDomain: 'shop.test' }).spiffeId, 'spiffe://shop.test/svc/orders');
    }
    const message = /up to 86340 .*issueCert\(\{ uris, notAfter \}\)/;
    await assert.rejects(ca.issueSvid({ service: 'orders', ttlSeconds: 86_341 }), { name: 'TypeError', message });
  });

  it('refuses service names that are not one SPIFFE path segment', async () => {
    for (const service of ['', 'a/b', '..', 'ordérs', 'a b']) {
      await assert.rejects(ca.issueSvid({ service }), TypeError, service);
    }
  });
});

describe('issueCert: crafted certificates a guard must refuse', () => {
  let ca: TestCa;
  before(async () => {
    ca = await createTestCa({ trustDomain: 'shop.test' });
  });

  it('writes two URI SANs, in order', async () => {
    const cert = await ca.issueCert({ uris: ['spiffe://shop.test/svc/a', 'spiffe://shop.test/svc/b'] });
    assert.equal(
      new X509Certificate(cert.certPem).subjectAltName,
      'URI:spiffe://shop.test/svc/a, URI:spiffe://shop.test/svc/b',
    );
  });

  it('leaves the SAN extension out entirely (no names, or noSan), or writes a DNS-only SAN', async () => {
    const bare = await ca.issueCert();
    const suppressed = await ca.issueCert({ uris: ['spiffe://shop.test/svc/a'], noSan: true });
    const dnsOnly = await ca.issueCert({ dnsNames: ['orders.shop.test'] });
    assert.equal(extensions(bare.certPem).san, null);
    assert.equal(extensions(suppressed.certPem).san, null);
    assert.equal(new X509Certificate(dnsOnly.certPem).subjectAltName, 'DNS:orders.shop.test');
  });

  it('writes look-alike SPIFFE IDs byte for byte', async () => {
    for (const uri of [
      'spiffe://shop.test.evil/svc/x',
      'spiffe://evilshop.test/svc/x',
      'spiffe://SHOP.TEST/svc/x',
      'spiffe://shop%2etest/svc/x',
    ]) {
      const cert = await ca.issueCert({ uris: [uri] });
      assert.deepEqual(extensions(cert.certPem).san?.names.toJSON(), [{ type: 'url', value: uri }]);
    }
  });

  it('issues a CA=true leaf, expired and not-yet-valid certificates, and custom EKUs', async () => {
    const caLeaf = await ca.issueCert({ uris: ['spiffe://shop.test/svc/x'], ca: true });
    assert.equal(extensions(caLeaf.certPem).basic?.ca, true);
    const past = new Date(Date.now() - 3_600_000);
    const expired = await ca.issueCert({ notBefore: new Date(past.getTime() - 3_600_000), notAfter: past });
    assert.ok(expired.notAfter.getTime() < Date.now());
    const future = new Date(Date.now() + 3_600_000);
    const early = await ca.issueCert({ notBefore: future });
    assert.ok(early.notBefore.getTime() > Date.now());
    assert.equal(extensions((await ca.issueCert({ eku: [] })).certPem).eku, null);
    assert.deepEqual(
      [...(extensions((await ca.issueCert({ eku: ['serverAuth'] })).certPem).eku?.usages ?? [])],
      [x509.ExtendedKeyUsage.serverAuth],
    );
    await assert.rejects(ca.issueCert({ eku: ['serverauth'] }), TypeError);
  });

  it('writes the key usages asked for, non-critical when asked, or none; each breaks one X509-SVID rule', async () => {
    const uris = ['spiffe://shop.test/svc/x'];
    const { digitalSignature, keyCertSign, cRLSign } = x509.KeyUsageFlags;
    const cases = [
      [{ keyUsage: ['digitalSignature', 'keyCertSign'] }, digitalSignature | keyCertSign, true, /keyCertSign/],
      [{ keyUsage: ['digitalSignature', 'cRLSign'] }, digitalSignature | cRLSign, true, /cRLSign/],
      [{ keyUsageCritical: false }, digitalSignature, false, /not critical/],
    ] as const;
    for (const [options, usages, critical, rule] of cases) {
      const cert = await ca.issueCert({ uris, ...options });
      const { keyUsage } = extensions(cert.certPem);
      assert.deepEqual([keyUsage?.usages, keyUsage?.critical], [usages, critical]);
      const refused = (error: unknown) =>
        error instanceof SvidError && error.code === 'SVID_KEY_USAGE' && rule.test(error.detail);
      assert.throws(() => readX509Svid(new X509Certificate(cert.certPem).raw), refused);
    }
    const none = await ca.issueCert({ uris, keyUsage: [] });
    assert.equal(extensions(none.certPem).keyUsage, null);
    assert.throws(() => readX509Svid(new X509Certificate(none.certPem).raw), { code: 'SVID_KEY_USAGE' });
    // The defaults make a compliant leaf.
    assert.equal(readX509Svid(new X509Certificate((await ca.issueCert({ uris })).certPem).raw).spiffeId, uris[0]);
    const misspelt = ca.issueCert({ keyUsage: ['digitalsignature' as 'digitalSignature'] });
    const message = /not a key usage; use digitalSignature, nonRepudiation/;
    await assert.rejects(misspelt, { name: 'TypeError', message });
  });

  it('sets the subject when asked', async () => {
    const cert = await ca.issueCert({ subject: 'CN=orders, O=Shop' });
    assert.equal(new X509Certificate(cert.certPem).subject, 'CN=orders\nO=Shop');
  });
});
