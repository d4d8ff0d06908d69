/**
 * The presented-chain step on real certificates, each path built with @peculiar/x509 so that it can
 * be what a CA should never issue: every case below is one that `openssl verify -x509_strict`
 * refuses, and so must the decision service (a proxy's forwarded chain is verified here, not there).
 */
import assert from 'node:assert/strict';
import { X509Certificate, webcrypto } from 'node:crypto';
import { before, describe, it } from 'node:test';
// @peculiar/x509 loads tsyringe, which needs the Reflect metadata polyfill first; ESM evaluates imports in order.
import 'reflect-metadata';
import { AsnConvert } from '@peculiar/asn1-schema';
import { GeneralName, GeneralSubtree, GeneralSubtrees, NameConstraints } from '@peculiar/asn1-x509';
import * as x509 from '@peculiar/x509';
import { GuardError } from '../errors.ts';
import { createPresentedChainStep, MAX_PRESENTED_CHAIN, type PresentedChainOptions } from './presented-chain.ts';

x509.cryptoProvider.set(globalThis.crypto);

const TRUST_DOMAIN = 'shop.test';
const ECDSA = { name: 'ECDSA', namedCurve: 'P-256' } as const;
const HOUR = 3_600_000;
let serial = 1;

interface Issuer {
  readonly cert: x509.X509Certificate;
  readonly key: webcrypto.CryptoKey;
  readonly pem: string;
}

interface CertOptions {
  readonly ca?: boolean;
  readonly pathLength?: number;
  readonly extra?: readonly x509.Extension[];
  readonly notAfter?: Date;
  readonly uri?: string;
  readonly subject?: string;
}

/** A certificate issued by `issuer` (self-signed when absent): a CA, or an X509-SVID leaf. */
async function issue(issuer: Issuer | null, options: CertOptions = {}): Promise<Issuer> {
  const keys = (await webcrypto.subtle.generateKey(ECDSA, true, ['sign', 'verify'])) as webcrypto.CryptoKeyPair;
  const ca = options.ca === true;
  const subject = options.subject ?? `CN=${ca ? 'ca' : 'leaf'} ${serial}`;
  const usages = ca ? x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign : x509.KeyUsageFlags.digitalSignature;
  const cert = await x509.X509CertificateGenerator.create({
    serialNumber: (serial++).toString(16).padStart(2, '0'),
    subject,
    issuer: issuer?.cert.subjectName ?? subject,
    notBefore: new Date(Date.now() - 60_000),
    notAfter: options.notAfter ?? new Date(Date.now() + HOUR),
    publicKey: keys.publicKey,
    signingKey: issuer?.key ?? keys.privateKey,
    signingAlgorithm: { name: 'ECDSA', hash: 'SHA-256' },
    extensions: [
      new x509.BasicConstraintsExtension(ca, options.pathLength, true),
      new x509.KeyUsagesExtension(usages, true),
      await x509.SubjectKeyIdentifierExtension.create(keys.publicKey),
      await x509.AuthorityKeyIdentifierExtension.create(issuer?.cert.publicKey ?? keys.publicKey),
      new x509.SubjectAlternativeNameExtension([
        { type: 'url', value: options.uri ?? (ca ? `spiffe://${TRUST_DOMAIN}` : `spiffe://${TRUST_DOMAIN}/svc/admin`) },
      ]),
      ...(options.extra ?? []),
    ],
  });
  return { cert, key: keys.privateKey, pem: cert.toString('pem') };
}

/** nameConstraints permitting URIs of `only.example` only, serialized by @peculiar/asn1-x509. */
function uriNameConstraints(): x509.Extension {
  const permitted = new GeneralSubtrees([
    new GeneralSubtree({ base: new GeneralName({ uniformResourceIdentifier: 'only.example' }) }),
  ]);
  const value = AsnConvert.serialize(new NameConstraints({ permittedSubtrees: permitted }));
  return new x509.Extension('2.5.29.30', true, value);
}

const UNKNOWN_CRITICAL = (): x509.Extension => new x509.Extension('1.3.6.1.4.1.99999.1', true, new Uint8Array([5, 0]));

function chainOf(...certificates: Issuer[]): string {
  return certificates.map((certificate) => certificate.pem).join('\n');
}

function stepFor(root: Issuer, overrides: Partial<PresentedChainOptions> = {}) {
  return createPresentedChainStep({
    trustDomain: TRUST_DOMAIN,
    trustBundle: () => root.pem,
    isRevokedSpiffeId: () => false,
    ...overrides,
  });
}

function refused(run: () => unknown, message: RegExp): void {
  assert.throws(run, (error: unknown) => {
    assert.ok(error instanceof GuardError, String(error));
    assert.equal(error.code, 'LOCKSTEP_ERR_PEER_UNTRUSTED');
    assert.match(error.message, message);
    return true;
  });
}

describe('presented chain: path rules as openssl verify -x509_strict applies them', () => {
  let root: Issuer;
  before(async () => {
    root = await issue(null, { ca: true, subject: 'CN=root' });
  });

  it('accepts an SVID issued by an intermediate under the root', async () => {
    const intermediate = await issue(root, { ca: true, pathLength: 0 });
    const leaf = await issue(intermediate);
    assert.equal(stepFor(root).identify(chainOf(leaf, intermediate)).spiffeId, `spiffe://${TRUST_DOMAIN}/svc/admin`);
  });

  it('refuses a sub-CA below an intermediate whose pathLenConstraint is 0', async () => {
    const intermediate = await issue(root, { ca: true, pathLength: 0 });
    const sub = await issue(intermediate, { ca: true });
    const leaf = await issue(sub);
    refused(() => stepFor(root).identify(chainOf(leaf, sub, intermediate)), /pathLenConstraint/);
  });

  it('refuses a path longer than the root pathLenConstraint allows', async () => {
    const strictRoot = await issue(null, { ca: true, pathLength: 0, subject: 'CN=strict root' });
    const intermediate = await issue(strictRoot, { ca: true });
    const leaf = await issue(intermediate);
    refused(() => stepFor(strictRoot).identify(chainOf(leaf, intermediate)), /pathLenConstraint/);
  });

  it('refuses an unknown critical extension on the leaf and on a CA of the path', async () => {
    const leaf = await issue(root, { extra: [UNKNOWN_CRITICAL()] });
    refused(() => stepFor(root).identify(leaf.pem), /critical extension .*1\.3\.6\.1\.4\.1\.99999\.1/);
    const intermediate = await issue(root, { ca: true, extra: [UNKNOWN_CRITICAL()] });
    const below = await issue(intermediate);
    refused(() => stepFor(root).identify(chainOf(below, intermediate)), /critical extension/);
  });

  it('refuses a path through a name-constrained CA (URI only.example issuing a shop.test SVID)', async () => {
    const constrained = await issue(root, { ca: true, extra: [uriNameConstraints()] });
    const leaf = await issue(constrained);
    refused(
      () => stepFor(root).identify(chainOf(leaf, constrained)),
      /name-constrained CAs are not supported through the decision service/,
    );
  });

  it('refuses an expired intermediate', async () => {
    const expired = await issue(root, { ca: true, notAfter: new Date(Date.now() - 1000) });
    const leaf = await issue(expired);
    refused(() => stepFor(root).identify(chainOf(leaf, expired)), /no path to the trust bundle/);
  });

  it('refuses a remembered chain once its intermediate expires, though the leaf lives on', async () => {
    let clock = Date.now();
    const intermediate = await issue(root, { ca: true, notAfter: new Date(clock + 10 * 60_000) });
    const leaf = await issue(intermediate, { notAfter: new Date(clock + HOUR) });
    const step = stepFor(root, { now: () => clock });
    const chain = chainOf(leaf, intermediate);
    assert.equal(step.identify(chain).spiffeId, `spiffe://${TRUST_DOMAIN}/svc/admin`);
    clock += 11 * 60_000;
    refused(() => step.identify(chain), /expired/);
  });

  it('refuses an issuer that is not a CA', async () => {
    const notCa = await issue(root, { subject: 'CN=not a ca' });
    const leaf = await issue(notCa);
    refused(() => stepFor(root).identify(chainOf(leaf, notCa)), /no path to the trust bundle/);
  });

  it('refuses an SVID leaf used as the issuer of another', async () => {
    const svid = await issue(root, { uri: `spiffe://${TRUST_DOMAIN}/svc/orders` });
    const forged = await issue(svid);
    refused(() => stepFor(root).identify(chainOf(forged, svid)), /no path to the trust bundle/);
  });

  it(`refuses a chain of more than ${MAX_PRESENTED_CHAIN} certificates`, async () => {
    let issuer = root;
    const cas: Issuer[] = [];
    for (let index = 0; index < MAX_PRESENTED_CHAIN; index++) cas.unshift((issuer = await issue(issuer, { ca: true })));
    const leaf = await issue(issuer);
    refused(() => stepFor(root).identify(chainOf(leaf, ...cas)), /too long/);
  });

  it('forgets remembered chains when the trust bundle changes', async () => {
    const other = await issue(null, { ca: true, subject: 'CN=other root' });
    let bundle = root.pem;
    const step = stepFor(root, { trustBundle: () => bundle });
    const leaf = await issue(root);
    assert.equal(step.identify(leaf.pem).spiffeId, `spiffe://${TRUST_DOMAIN}/svc/admin`);
    bundle = other.pem;
    refused(() => step.identify(leaf.pem), /no path to the trust bundle/);
    bundle = root.pem;
    assert.equal(step.identify(leaf.pem).spiffeId, `spiffe://${TRUST_DOMAIN}/svc/admin`);
  });

  it('still accepts a chain given as DER certificates', async () => {
    const intermediate = await issue(root, { ca: true, pathLength: 0 });
    const leaf = await issue(intermediate);
    const der = [leaf, intermediate].map((one) => new Uint8Array(new X509Certificate(one.pem).raw));
    assert.equal(stepFor(root).identify(der).spiffeId, `spiffe://${TRUST_DOMAIN}/svc/admin`);
  });
});
