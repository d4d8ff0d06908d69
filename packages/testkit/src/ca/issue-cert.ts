import type { webcrypto } from 'node:crypto';
import { x509 } from '../lib/x509.ts';
import { exportPkcs8Pem, generateP256KeyPair } from './keys.ts';
import { randomSerialNumber } from './serial-number.ts';

/** The CA key that signs, and the certificates that go between a leaf and the root. */
export interface CertificateSigner {
  readonly cert: x509.X509Certificate;
  readonly privateKey: webcrypto.CryptoKey;
  /** PEM of the issuing chain below the root (the intermediate, if any), appended to chainPem. */
  readonly chainBelowRoot: readonly string[];
}

export type ExtendedKeyUsageName = keyof typeof x509.ExtendedKeyUsage;
export type KeyUsageName = keyof typeof x509.KeyUsageFlags;

/**
 * Raw certificate options: nothing here is checked against the SPIFFE rules, so tests can
 * craft the certificates a guard must refuse. The defaults make a compliant X509-SVID leaf
 * (CA=false, critical key usage digitalSignature, one hour) once `uris` holds one SPIFFE ID.
 */
export interface IssueCertOptions {
  /** URI SAN entries, written verbatim (two entries, foreign trust domains, odd casing…). */
  readonly uris?: readonly string[];
  /** DNS SAN entries. */
  readonly dnsNames?: readonly string[];
  /** Leave out the subjectAltName extension even when uris or dnsNames are given. */
  readonly noSan?: boolean;
  /** basicConstraints CA=true (and keyCertSign): a CA certificate presented as a leaf. */
  readonly ca?: boolean;
  /**
   * Key usages by name, e.g. ['digitalSignature', 'keyCertSign']; [] leaves the extension out.
   * Default digitalSignature (with keyCertSign and cRLSign when `ca`).
   */
  readonly keyUsage?: readonly KeyUsageName[];
  /** Mark the key usage extension critical (default true, as an X509-SVID must). */
  readonly keyUsageCritical?: boolean;
  /** Default: one minute ago, so small clock differences do not matter. */
  readonly notBefore?: Date;
  /** Default: one hour after now. */
  readonly notAfter?: Date;
  /** Extended key usages by name or OID; default serverAuth + clientAuth; [] leaves the extension out. */
  readonly eku?: readonly (ExtendedKeyUsageName | string)[];
  /** Subject DN string, e.g. 'CN=orders, O=Shop'. Default 'CN=lockstep-testkit-leaf'. */
  readonly subject?: string;
}

export interface IssuedCert {
  readonly certPem: string;
  /** PKCS#8 PEM of a key generated for this certificate alone. */
  readonly keyPem: string;
  /** The leaf followed by the intermediate, if the CA has one: what a TLS peer sends. */
  readonly chainPem: string;
  readonly serialNumber: string;
  readonly notBefore: Date;
  readonly notAfter: Date;
}

const DEFAULT_EKU: readonly ExtendedKeyUsageName[] = ['serverAuth', 'clientAuth'];
const LEAF_KEY_USAGE: readonly KeyUsageName[] = ['digitalSignature'];
const CA_KEY_USAGE: readonly KeyUsageName[] = ['digitalSignature', 'keyCertSign', 'cRLSign'];
const OID = /^\d+(\.\d+)+$/;

export async function issueCertificate(signer: CertificateSigner, options: IssueCertOptions = {}): Promise<IssuedCert> {
  const now = Date.now();
  const notBefore = options.notBefore ?? new Date(now - 60_000);
  const notAfter = options.notAfter ?? new Date(now + 3_600_000);
  const keys = await generateP256KeyPair();
  const isCa = options.ca === true;

  const usages = options.keyUsage ?? (isCa ? CA_KEY_USAGE : LEAF_KEY_USAGE);
  const extensions: x509.Extension[] = [
    new x509.BasicConstraintsExtension(isCa, undefined, true),
    ...(usages.length === 0 ? [] : [keyUsageExtension(usages, options.keyUsageCritical ?? true)]),
    await x509.SubjectKeyIdentifierExtension.create(keys.publicKey),
    await x509.AuthorityKeyIdentifierExtension.create(signer.cert.publicKey),
  ];
  const eku = (options.eku ?? DEFAULT_EKU).map(ekuOid);
  if (eku.length > 0) extensions.push(new x509.ExtendedKeyUsageExtension(eku));
  const names: x509.JsonGeneralName[] = [
    ...(options.uris ?? []).map((value) => ({ type: 'url' as const, value })),
    ...(options.dnsNames ?? []).map((value) => ({ type: 'dns' as const, value })),
  ];
  // An empty GeneralNames is not valid DER, so "no names" means "no extension".
  if (options.noSan !== true && names.length > 0) extensions.push(new x509.SubjectAlternativeNameExtension(names));

  const cert = await x509.X509CertificateGenerator.create({
    serialNumber: randomSerialNumber(),
    subject: options.subject ?? 'CN=lockstep-testkit-leaf',
    issuer: signer.cert.subjectName,
    notBefore,
    notAfter,
    publicKey: keys.publicKey,
    signingKey: signer.privateKey,
    signingAlgorithm: { name: 'ECDSA', hash: 'SHA-256' },
    extensions,
  });
  const certPem = cert.toString('pem');
  return {
    certPem,
    keyPem: exportPkcs8Pem(keys.privateKey),
    chainPem: joinPem([certPem, ...signer.chainBelowRoot]),
    serialNumber: cert.serialNumber,
    notBefore: cert.notBefore,
    notAfter: cert.notAfter,
  };
}

export function joinPem(pems: readonly string[]): string {
  return pems.map((pem) => pem.trim() + '\n').join('');
}

function keyUsageExtension(names: readonly string[], critical: boolean): x509.KeyUsagesExtension {
  let flags = 0;
  for (const name of names) {
    const flag = (x509.KeyUsageFlags as unknown as Record<string, unknown>)[name];
    if (typeof flag !== 'number') {
      // A numeric enum maps numbers back to names too: list the names only.
      const known = Object.keys(x509.KeyUsageFlags).filter((key) => Number.isNaN(Number(key)));
      throw new TypeError(`keyUsage: "${name}" is not a key usage; use ${known.join(', ')}`);
    }
    flags |= flag;
  }
  return new x509.KeyUsagesExtension(flags, critical);
}

function ekuOid(usage: string): string {
  if (Object.hasOwn(x509.ExtendedKeyUsage, usage)) return x509.ExtendedKeyUsage[usage as ExtendedKeyUsageName];
  if (OID.test(usage)) return usage;
  throw new TypeError(
    `eku: "${usage}" is neither a known usage name (${Object.keys(x509.ExtendedKeyUsage).join(', ')}) nor an OID`,
  );
}
