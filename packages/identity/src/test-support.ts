/**
 * For this package's tests only: a CA and leaves built with @peculiar/x509, each leaf defective in
 * whichever way a test asks. (The testkit builds its certificates on top of this package, so these
 * tests cannot use it.)
 */
import type { webcrypto } from 'node:crypto';
import 'reflect-metadata';
import * as x509 from '@peculiar/x509';

x509.cryptoProvider.set(globalThis.crypto);

const P256 = { name: 'ECDSA', namedCurve: 'P-256' } as const;
const SHA256 = { name: 'ECDSA', hash: 'SHA-256' } as const;
const HOUR_MS = 3_600_000;

export interface TestSigner {
  readonly cert: x509.X509Certificate;
  readonly privateKey: webcrypto.CryptoKey;
  readonly pem: string;
}

export interface LeafOptions {
  readonly uris?: readonly string[];
  /** Key usage flags; null leaves the extension out. Default digitalSignature. */
  readonly keyUsage?: number | null;
  /** Default true. */
  readonly keyUsageCritical?: boolean;
  /** basicConstraints cA; null leaves the extension out. Default false. */
  readonly ca?: boolean | null;
  readonly notBefore?: Date;
  readonly notAfter?: Date;
  /** Extensions appended as they are (e.g. a second key usage). */
  readonly extra?: readonly x509.Extension[];
}

export interface TestLeaf {
  readonly der: Uint8Array;
  readonly certPem: string;
  readonly keyPem: string;
}

export async function createSigner(name = 'identity test CA'): Promise<TestSigner> {
  const keys = await crypto.subtle.generateKey(P256, true, ['sign', 'verify']);
  const cert = await x509.X509CertificateGenerator.createSelfSigned({
    serialNumber: '01',
    name: `CN=${name}`,
    keys,
    signingAlgorithm: SHA256,
    notBefore: new Date(Date.now() - 24 * HOUR_MS),
    notAfter: new Date(Date.now() + 24 * HOUR_MS),
    extensions: [
      new x509.BasicConstraintsExtension(true, undefined, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign, true),
    ],
  });
  return { cert, privateKey: keys.privateKey, pem: cert.toString('pem') };
}

export async function issueLeaf(signer: TestSigner, options: LeafOptions = {}): Promise<TestLeaf> {
  const keys = await crypto.subtle.generateKey(P256, true, ['sign', 'verify']);
  const cert = await x509.X509CertificateGenerator.create({
    serialNumber: `1${Buffer.from(crypto.getRandomValues(new Uint8Array(8))).toString('hex')}`,
    issuer: signer.cert.subject,
    subject: '',
    publicKey: keys.publicKey,
    signingKey: signer.privateKey,
    signingAlgorithm: SHA256,
    notBefore: options.notBefore ?? new Date(Date.now() - 60_000),
    notAfter: options.notAfter ?? new Date(Date.now() + HOUR_MS),
    extensions: leafExtensions(options),
  });
  const keyPem = x509.PemConverter.encode(await crypto.subtle.exportKey('pkcs8', keys.privateKey), 'PRIVATE KEY');
  return { der: new Uint8Array(cert.rawData), certPem: cert.toString('pem'), keyPem };
}

function leafExtensions(options: LeafOptions): x509.Extension[] {
  const extensions: x509.Extension[] = [];
  if (options.ca !== null) extensions.push(new x509.BasicConstraintsExtension(options.ca ?? false, undefined, true));
  if (options.keyUsage !== null) {
    const usages = options.keyUsage ?? x509.KeyUsageFlags.digitalSignature;
    extensions.push(new x509.KeyUsagesExtension(usages, options.keyUsageCritical ?? true));
  }
  const uris = options.uris ?? ['spiffe://shop.test/svc/orders'];
  const names = uris.map((value) => ({ type: 'url' as const, value }));
  if (names.length > 0) extensions.push(new x509.SubjectAlternativeNameExtension(names, true));
  return [...extensions, ...(options.extra ?? [])];
}

export const KeyUsage = x509.KeyUsageFlags;

/** A critical key usage extension with `usages`, to append as a duplicate. */
export function keyUsageExtension(usages: number): x509.Extension {
  return new x509.KeyUsagesExtension(usages, true);
}
