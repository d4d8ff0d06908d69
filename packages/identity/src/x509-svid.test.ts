import assert from 'node:assert/strict';
import { before, describe, it } from 'node:test';
// @peculiar/x509 loads tsyringe, which needs the Reflect metadata polyfill first.
import 'reflect-metadata';
import * as x509 from '@peculiar/x509';
import { readX509Svid, SvidError, type SvidErrorCode } from './x509-svid.ts';
import {
  createSigner,
  issueLeaf,
  KeyUsage,
  keyUsageExtension,
  type LeafOptions,
  type TestSigner,
} from './test-support.ts';

const DAY_MS = 86_400_000;
const HOUR_MS = 3_600_000;
const OURS = { trustDomain: 'shop.test' } as const;
const { digitalSignature, keyEncipherment, keyAgreement, keyCertSign, cRLSign } = KeyUsage;
const hoursFromNow = (hours: number) => new Date(Date.now() + hours * HOUR_MS);
let signer: TestSigner;
before(async () => {
  signer = await createSigner();
});

type Options = Parameters<typeof readX509Svid>[1];

function refusedWith(der: Uint8Array, code: SvidErrorCode, detail: RegExp, options: Options = OURS): void {
  assert.throws(
    () => readX509Svid(der, options),
    (error: unknown) => {
      assert.ok(error instanceof SvidError, `an SvidError, not ${String(error)}`);
      assert.equal(error.code, code);
      assert.match(error.detail, detail);
      return true;
    },
  );
}

describe('readX509Svid', () => {
  it('reads a compliant leaf: frozen identity with kind, name, service and validity', async () => {
    const notBefore = new Date(Date.now() - 60_000);
    const notAfter = new Date(notBefore.getTime() + 3_600_000);
    const leaf = await issueLeaf(signer, { uris: ['spiffe://shop.test/svc/orders'], notBefore, notAfter });
    const identity = readX509Svid(leaf.der, OURS);
    assert.deepEqual(identity, {
      spiffeId: 'spiffe://shop.test/svc/orders',
      trustDomain: 'shop.test',
      path: '/svc/orders',
      kind: 'svc',
      name: 'orders',
      service: 'orders',
      notBeforeMs: Math.floor(notBefore.getTime() / 1000) * 1000,
      notAfterMs: Math.floor(notAfter.getTime() / 1000) * 1000,
    });
    assert.ok(Object.isFrozen(identity));
  });

  it('accepts keyEncipherment and keyAgreement (§4.3 MAY), and any trust domain when none is given', async () => {
    const keyUsage = digitalSignature | keyEncipherment | keyAgreement;
    const leaf = await issueLeaf(signer, { uris: ['spiffe://other.test/ns/prod/sa/web'], keyUsage });
    const { trustDomain, kind, name, service } = readX509Svid(leaf.der);
    assert.deepEqual([trustDomain, kind, name, service], ['other.test', null, null, null]);
  });

  it('accepts a leaf without a basicConstraints extension: cA is false by default (RFC 5280 §4.2.1.9)', async () => {
    assert.equal(readX509Svid((await issueLeaf(signer, { ca: null })).der, OURS).service, 'orders');
  });

  const cases: Array<[string, LeafOptions, SvidErrorCode, RegExp]> = [
    ['a CA certificate', { ca: true, keyUsage: digitalSignature | keyCertSign }, 'SVID_CA', /CA certificate/],
    ['keyCertSign', { keyUsage: digitalSignature | keyCertSign }, 'SVID_KEY_USAGE', /keyCertSign/],
    ['cRLSign', { keyUsage: digitalSignature | cRLSign }, 'SVID_KEY_USAGE', /cRLSign/],
    ['no key usage', { keyUsage: null }, 'SVID_KEY_USAGE', /no key usage extension/],
    ['a non-critical key usage', { keyUsageCritical: false }, 'SVID_KEY_USAGE', /not critical/],
    ['no digitalSignature', { keyUsage: keyAgreement }, 'SVID_KEY_USAGE', /lacks digitalSignature/],
    ['no URI SAN', { uris: [] }, 'SVID_URI_SAN', /has 0/],
    ['two URI SANs', { uris: ['spiffe://shop.test/svc/orders', 'spiffe://shop.test/svc/x'] }, 'SVID_URI_SAN', /has 2/],
    ['a malformed SPIFFE ID', { uris: ['spiffe://SHOP.TEST/svc/orders'] }, 'SVID_ID_INVALID', /not a well-formed/],
    ['an https URI', { uris: ['https://shop.test/svc/orders'] }, 'SVID_ID_INVALID', /not a well-formed/],
    ['no path (the trust domain itself)', { uris: ['spiffe://shop.test'] }, 'SVID_NO_PATH', /has no path/],
    [
      'another trust domain',
      { uris: ['spiffe://shop.test.evil/svc/orders'] },
      'SVID_FOREIGN_TRUST_DOMAIN',
      /not in trust domain shop\.test/,
    ],
    [
      'a 10-year lifetime',
      { notAfter: new Date(Date.now() + 3650 * DAY_MS) },
      'SVID_LIFETIME',
      /valid for 3650 days; an SVID may live at most 24 h \(86400 s\)/,
    ],
    [
      'a lifetime of 24 h and 2 s',
      { notBefore: hoursFromNow(-1 / 3600), notAfter: hoursFromNow(24 + 1 / 3600) },
      'SVID_LIFETIME',
      /24 h/,
    ],
    ['a second key usage extension', { extra: [keyUsageExtension(keyCertSign)] }, 'SVID_UNPARSABLE', /more than once/],
  ];
  for (const [what, options, code, detail] of cases) {
    it(`refuses ${what} with ${code}`, async () => {
      refusedWith((await issueLeaf(signer, options)).der, code, detail);
    });
  }

  it('refuses bytes that are not a certificate', () => {
    refusedWith(new Uint8Array([0x30, 0x03, 0x02, 0x01, 0x01]), 'SVID_UNPARSABLE', /could not be parsed/);
    refusedWith(new Uint8Array(0), 'SVID_UNPARSABLE', /could not be parsed/);
  });

  it('takes a lower maximum lifetime, and a lifetime exactly at the maximum passes', async () => {
    const notBefore = new Date(Math.floor(Date.now() / 1000) * 1000 - 60_000);
    const leaf = await issueLeaf(signer, { notBefore, notAfter: new Date(notBefore.getTime() + 3_600_000) });
    assert.equal(readX509Svid(leaf.der, { ...OURS, maxLifetimeSeconds: 3_600 }).service, 'orders');
    const lower = { ...OURS, maxLifetimeSeconds: 3_599 };
    refusedWith(leaf.der, 'SVID_LIFETIME', /valid for 1 h; an SVID may live at most 3599 s$/, lower);
  });

  it('checks the validity period only when asked, at `now`', async () => {
    const leaf = await issueLeaf(signer, { notBefore: hoursFromNow(-2), notAfter: hoursFromNow(-1) });
    assert.equal(readX509Svid(leaf.der, OURS).service, 'orders');
    refusedWith(leaf.der, 'SVID_VALIDITY', /expired at/, { ...OURS, now: Date.now() });
    refusedWith(leaf.der, 'SVID_VALIDITY', /not valid before/, { ...OURS, now: hoursFromNow(-3).getTime() });
  });

  it("treats bad options as the caller's mistake (TypeError)", async () => {
    const { der } = await issueLeaf(signer);
    const message = /maxLifetimeSeconds must be a whole number of seconds ≥ 1, e\.g\. 86400/;
    assert.throws(() => readX509Svid(der, { maxLifetimeSeconds: 0 }), message);
    assert.throws(() => readX509Svid(der, { trustDomain: 'spiffe://shop.test' }), TypeError);
    assert.throws(() => readX509Svid(der, { now: Number.NaN }), TypeError);
  });

  it("does not see later changes to the caller's buffer", async () => {
    const { der } = await issueLeaf(signer);
    const identity = readX509Svid(der, OURS);
    der.fill(0);
    assert.equal(identity.spiffeId, 'spiffe://shop.test/svc/orders');
  });

  // The cases below were found missing by the mutation run (docs/mutation.md).

  it('refuses a second basicConstraints or subjectAltName extension, like a second key usage', async () => {
    const secondCa = new x509.BasicConstraintsExtension(false, undefined, true);
    const secondUri = [{ type: 'url', value: 'spiffe://shop.test/svc/x' }] as const;
    const secondSan = new x509.SubjectAlternativeNameExtension([...secondUri], true);
    for (const extra of [secondCa, secondSan]) {
      refusedWith((await issueLeaf(signer, { extra: [extra] })).der, 'SVID_UNPARSABLE', /more than once/);
    }
  });

  it('counts URI names only: a DNS name beside the one URI SAN is allowed (X509-SVID §2)', async () => {
    const names = [
      { type: 'dns', value: 'orders.shop.test' },
      { type: 'url', value: 'spiffe://shop.test/svc/orders' },
    ] as const;
    const san = new x509.SubjectAlternativeNameExtension([...names], true);
    const leaf = await issueLeaf(signer, { uris: [], extra: [san] });
    assert.equal(readX509Svid(leaf.der, OURS).spiffeId, 'spiffe://shop.test/svc/orders');
  });

  it('is valid at `now` from notBefore up to notAfter, and refused from notAfter on', async () => {
    const notBefore = new Date(Math.floor(Date.now() / 1000) * 1000 - 60_000);
    const notAfter = new Date(notBefore.getTime() + HOUR_MS);
    const { der } = await issueLeaf(signer, { notBefore, notAfter });
    for (const now of [notBefore.getTime(), notBefore.getTime() + HOUR_MS / 2, notAfter.getTime() - 1]) {
      assert.equal(readX509Svid(der, { ...OURS, now }).service, 'orders', `valid at ${new Date(now).toISOString()}`);
    }
    refusedWith(der, 'SVID_VALIDITY', /not valid before/, { ...OURS, now: notBefore.getTime() - 1 });
    refusedWith(der, 'SVID_VALIDITY', /expired at/, { ...OURS, now: notAfter.getTime() });
  });

  it('takes a maximum lifetime of 1 s, the smallest there is', async () => {
    const { der } = await issueLeaf(signer);
    refusedWith(der, 'SVID_LIFETIME', /at most 1 s$/, { ...OURS, maxLifetimeSeconds: 1 });
  });
});
