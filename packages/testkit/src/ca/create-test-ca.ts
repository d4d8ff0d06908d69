import type { webcrypto } from 'node:crypto';
import { trustDomainId } from '@lockstep/identity';
import { x509 } from '../lib/x509.ts';
import { issueCertificate, joinPem } from './issue-cert.ts';
import type { CertificateSigner, IssueCertOptions, IssuedCert } from './issue-cert.ts';
import { issueSvid } from './issue-svid.ts';
import type { IssueSvidOptions, Svid } from './issue-svid.ts';
import { generateP256KeyPair } from './keys.ts';
import { randomSerialNumber } from './serial-number.ts';
import { assertTrustDomain } from './spiffe-id.ts';

export interface TestCaOptions {
  /** e.g. "shop.test". */
  readonly trustDomain: string;
  /** Common name of the root. Default "Lockstep testkit root (<trust domain>)". */
  readonly name?: string;
  /** Issue leaves from an intermediate CA (pathLen 0) instead of the root. */
  readonly intermediate?: boolean;
}

export interface TestCa {
  readonly trustDomain: string;
  readonly rootPem: string;
  /** Present when the CA was created with `intermediate: true`. */
  readonly intermediatePem?: string;
  /** The trust bundle: what a peer passes as `ca`. Holds the root only. */
  readonly bundlePem: string;
  issueSvid(options: IssueSvidOptions): Promise<Svid>;
  issueCert(options?: IssueCertOptions): Promise<IssuedCert>;
}

const DAY_MS = 86_400_000;
const ECDSA_SHA256 = { name: 'ECDSA', hash: 'SHA-256' };

/**
 * A throw-away workload CA for tests: its keys live only in this process and die with it.
 * Never use it to secure anything real.
 */
export async function createTestCa(options: TestCaOptions): Promise<TestCa> {
  const { trustDomain } = options;
  assertTrustDomain(trustDomain);
  const name = options.name ?? `Lockstep testkit root (${trustDomain})`;
  const now = Date.now();
  // Backdated a day so that leaves backdated for "expired" tests still sit inside the CA's validity.
  const validity = { notBefore: new Date(now - DAY_MS), notAfter: new Date(now + 365 * DAY_MS) };

  const rootKeys = await generateP256KeyPair();
  const root = await x509.X509CertificateGenerator.createSelfSigned({
    serialNumber: randomSerialNumber(),
    name: [{ CN: [name] }, { O: ['Lockstep testkit'] }],
    keys: rootKeys,
    ...validity,
    signingAlgorithm: ECDSA_SHA256,
    extensions: await caExtensions(trustDomain, rootKeys.publicKey, rootKeys.publicKey, undefined),
  });
  const rootPem = root.toString('pem');
  let signer: CertificateSigner = { cert: root, privateKey: rootKeys.privateKey, chainBelowRoot: [] };
  let intermediatePem: string | undefined;

  if (options.intermediate === true) {
    const keys = await generateP256KeyPair();
    const cert = await x509.X509CertificateGenerator.create({
      serialNumber: randomSerialNumber(),
      subject: [{ CN: [`${name} intermediate`] }, { O: ['Lockstep testkit'] }],
      issuer: root.subjectName,
      publicKey: keys.publicKey,
      signingKey: rootKeys.privateKey,
      ...validity,
      signingAlgorithm: ECDSA_SHA256,
      extensions: await caExtensions(trustDomain, keys.publicKey, rootKeys.publicKey, 0),
    });
    intermediatePem = cert.toString('pem');
    signer = { cert, privateKey: keys.privateKey, chainBelowRoot: [intermediatePem] };
  }

  return Object.freeze({
    trustDomain,
    rootPem,
    ...(intermediatePem === undefined ? {} : { intermediatePem }),
    bundlePem: joinPem([rootPem]),
    issueSvid: (svidOptions: IssueSvidOptions) => issueSvid(signer, trustDomain, svidOptions),
    issueCert: (certOptions?: IssueCertOptions) => issueCertificate(signer, certOptions),
  });
}

async function caExtensions(
  trustDomain: string,
  subjectKey: webcrypto.CryptoKey,
  issuerKey: webcrypto.CryptoKey,
  pathLength: number | undefined,
): Promise<x509.Extension[]> {
  return [
    new x509.BasicConstraintsExtension(true, pathLength, true),
    new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign, true),
    await x509.SubjectKeyIdentifierExtension.create(subjectKey),
    await x509.AuthorityKeyIdentifierExtension.create(issuerKey),
    // X.509-SVID §4.1: a signing certificate may carry the trust domain's SPIFFE ID, as SPIRE's do.
    new x509.SubjectAlternativeNameExtension([{ type: 'url', value: trustDomainId(trustDomain) }]),
  ];
}
