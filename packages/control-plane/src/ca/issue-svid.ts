/**
 * Issues an X.509-SVID from a workload's CSR (its private key never leaves it). The CSR is checked
 * as a table of small rules — each refusal names the rule — and only its public key is used: the
 * certificate's contents are ours. Exactly one URI SAN `spiffe://<td>/svc/<name>`, CA=false,
 * digitalSignature, serverAuth + clientAuth, 1 h by default, never beyond the intermediate, and
 * never longer than the X509-SVID rules of @lockstep/identity allow (24 h, backdating included).
 */
import { createHash, createPublicKey, sign, verify, type webcrypto } from 'node:crypto';
import { CertificationRequest } from '@peculiar/asn1-csr';
import { AsnConvert, OctetString } from '@peculiar/asn1-schema';
import * as asn1X509 from '@peculiar/asn1-x509';
import { DEFAULT_MAX_SVID_LIFETIME_SECONDS, workloadId } from '@lockstep/identity';
import { ControlPlaneError } from '../errors.ts';
import { x509 } from '../lib/x509.ts';
import { randomSerial, type CaSigner, type WorkloadCa } from './workload-ca.ts';

export interface IssuedSvid {
  readonly spiffeId: string;
  readonly serial: string;
  /** Leaf then intermediate, PEM: what the workload serves. */
  readonly chainPem: string;
  readonly notBefore: Date;
  readonly notAfter: Date;
  /** SHA-256 (hex) of its public key's SPKI DER (`publicKeyHash`): how a succession names its successor's key. */
  readonly publicKeyHash: string;
}

export interface IssueSvidRequest {
  readonly csrPem: string;
  /** The service the caller has proven it may be (join token, or the SVID it renews with). */
  readonly service: string;
  readonly ttlSeconds?: number;
}

const SERVICE_NAME = /^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$/;
const MAX_CSR_BYTES = 8 * 1024;
const DEFAULT_TTL_SECONDS = 3600;
const MAX_TTL_SECONDS = 24 * 3600;
const ECDSA_WITH_SHA256 = '1.2.840.10045.4.3.2';
// Issued a little in the past, so that a peer whose clock is slightly behind already accepts it.
const BACKDATE_MS = 60_000;

/** A service name is a lower-case DNS label: it becomes the last segment of a SPIFFE ID. */
export function isServiceName(service: unknown): service is string {
  return typeof service === 'string' && SERVICE_NAME.test(service);
}

export function spiffeIdFor(trustDomain: string, service: string): string {
  if (!isServiceName(service))
    throw new ControlPlaneError(
      'LOCKSTEP_CP_CSR_INVALID',
      `service name ${JSON.stringify(String(service).slice(0, 80))} is not a lower-case DNS label`,
    );
  return workloadId(trustDomain, service);
}

export async function issueSvidFromCsr(ca: WorkloadCa, request: IssueSvidRequest): Promise<IssuedSvid> {
  const spiffeId = spiffeIdFor(ca.trustDomain, request.service);
  const ttlSeconds = request.ttlSeconds ?? DEFAULT_TTL_SECONDS;
  if (!Number.isInteger(ttlSeconds) || ttlSeconds < 60 || ttlSeconds > MAX_TTL_SECONDS) {
    throw new TypeError(
      `ttlSeconds must be a whole number of seconds from 60 to ${MAX_TTL_SECONDS}; got ${ttlSeconds}`,
    );
  }
  // The CSR's key as parsed (SPKI): no export/import round trip through WebCrypto.
  return signLeaf(ca, checkCsr(request.csrPem, spiffeId), spiffeId, ttlSeconds);
}

/**
 * Signs a leaf for `spiffeId` with the intermediate: X.509-SVID profile, backdated a minute, never
 * past the intermediate's own expiry, and living at most 24 h in all (notAfter − notBefore: what
 * every peer checks), so a 24 h request ends a minute early. Used for workloads (from their CSR),
 * administrators, scanners and the control plane's own server certificate.
 *
 * Built with the ASN.1 schema library (@peculiar/asn1-x509) rather than X509CertificateGenerator:
 * the issuer name, the algorithm and the fixed extensions are parsed once per CA, the SAN once per
 * SPIFFE ID, the result is not parsed back, and node:crypto signs with a DER signature directly.
 * That is what takes issuance past 500 SVIDs/s on one core (see docs/performance-notes.md).
 */
export async function signLeaf(
  ca: WorkloadCa,
  publicKey: webcrypto.CryptoKey | asn1X509.SubjectPublicKeyInfo,
  spiffeId: string,
  ttlSeconds: number,
): Promise<IssuedSvid> {
  const template = await templateFor(ca.signer);
  const now = ca.now();
  const notBefore = new Date(now - BACKDATE_MS);
  const longest = notBefore.getTime() + DEFAULT_MAX_SVID_LIFETIME_SECONDS * 1000;
  const notAfter = new Date(Math.min(now + ttlSeconds * 1000, longest, ca.signer.cert.notAfter.getTime()));
  const serial = randomSerial();
  const spki =
    publicKey instanceof asn1X509.SubjectPublicKeyInfo
      ? publicKey
      : AsnConvert.parse(await crypto.subtle.exportKey('spki', publicKey), asn1X509.SubjectPublicKeyInfo);
  const tbsCertificate = new asn1X509.TBSCertificate({
    version: asn1X509.Version.v3,
    serialNumber: bytes(Buffer.from(serial, 'hex')),
    signature: template.algorithm,
    issuer: template.issuer,
    validity: new asn1X509.Validity({ notBefore, notAfter }),
    // X.509-SVID: the identity is the URI SAN; the subject stays empty, so the SAN is critical (RFC 5280 §4.2.1.6).
    subject: new asn1X509.Name(),
    subjectPublicKeyInfo: spki,
    extensions: new asn1X509.Extensions([
      ...template.fixed,
      sanFor(spiffeId),
      // RFC 5280 §4.2.1.2 method (1): SHA-1 of the subjectPublicKey bits.
      new asn1X509.Extension({
        extnID: asn1X509.id_ce_subjectKeyIdentifier,
        critical: false,
        extnValue: new OctetString(
          AsnConvert.serialize(
            new asn1X509.SubjectKeyIdentifier(
              bytes(createHash('sha1').update(new Uint8Array(spki.subjectPublicKey)).digest()),
            ),
          ),
        ),
      }),
    ]),
  });
  const signature = sign('sha256', new Uint8Array(AsnConvert.serialize(tbsCertificate)), {
    key: ca.signer.keyObject,
    dsaEncoding: 'der',
  });
  const der = AsnConvert.serialize(
    new asn1X509.Certificate({
      tbsCertificate,
      signatureAlgorithm: template.algorithm,
      signatureValue: bytes(signature),
    }),
  );
  return {
    spiffeId,
    serial,
    chainPem: `${x509.PemConverter.encode(der, 'CERTIFICATE')}\n${ca.intermediatePem}`,
    notBefore,
    notAfter,
    publicKeyHash: publicKeyHash(spki),
  };
}

/** SHA-256 (hex) of a public key's SPKI DER. */
export function publicKeyHash(spki: asn1X509.SubjectPublicKeyInfo): string {
  return createHash('sha256')
    .update(new Uint8Array(AsnConvert.serialize(spki)))
    .digest('hex');
}

function bytes(buffer: Buffer): ArrayBuffer {
  return buffer.buffer.slice(buffer.byteOffset, buffer.byteOffset + buffer.byteLength) as ArrayBuffer;
}

// The SAN extension per SPIFFE ID: a fleet renews the same few names again and again.
const sans = new Map<string, asn1X509.Extension>();
function sanFor(spiffeId: string): asn1X509.Extension {
  let san = sans.get(spiffeId);
  if (san === undefined) {
    if (sans.size >= 4_096) sans.clear();
    san = AsnConvert.parse(
      new x509.SubjectAlternativeNameExtension([{ type: 'url', value: spiffeId }], true).rawData,
      asn1X509.Extension,
    );
    sans.set(spiffeId, san);
  }
  return san;
}

interface LeafTemplate {
  readonly issuer: asn1X509.Name;
  readonly algorithm: asn1X509.AlgorithmIdentifier;
  readonly fixed: readonly asn1X509.Extension[];
}

// What every leaf of a CA shares, built once per CA (the authority key id costs a hash).
const templates = new WeakMap<CaSigner, Promise<LeafTemplate>>();
function templateFor(signer: CaSigner): Promise<LeafTemplate> {
  let template = templates.get(signer);
  if (template === undefined) {
    template = (async () => {
      const fixed = [
        new x509.BasicConstraintsExtension(false, undefined, true),
        new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature, true),
        new x509.ExtendedKeyUsageExtension([x509.ExtendedKeyUsage.serverAuth, x509.ExtendedKeyUsage.clientAuth], false),
        await x509.AuthorityKeyIdentifierExtension.create(signer.cert),
      ];
      return {
        issuer: AsnConvert.parse(signer.cert.subjectName.toArrayBuffer(), asn1X509.Name),
        algorithm: new asn1X509.AlgorithmIdentifier({ algorithm: ECDSA_WITH_SHA256 }),
        fixed: fixed.map((extension) => AsnConvert.parse(extension.rawData, asn1X509.Extension)),
      };
    })();
    templates.set(signer, template);
  }
  return template;
}

/** The CSR rules; the first that fails refuses the request. Returns the CSR's public key. */
/** The CSR's public key, after its rules (proof of possession; a SAN, if asked for, must be `spiffeId`). */
export function checkCsr(csrPem: string, spiffeId: string): asn1X509.SubjectPublicKeyInfo {
  const refuse = (rule: string): never => {
    throw new ControlPlaneError('LOCKSTEP_CP_CSR_INVALID', rule);
  };
  if (typeof csrPem !== 'string' || csrPem.length > MAX_CSR_BYTES)
    refuse(`a CSR is a PEM string of at most ${MAX_CSR_BYTES} bytes`);
  let request: CertificationRequest;
  try {
    const blocks = csrPem.match(/-----BEGIN CERTIFICATE REQUEST-----[\s\S]+?-----END CERTIFICATE REQUEST-----/g) ?? [];
    if (blocks.length !== 1) throw new TypeError('one CERTIFICATE REQUEST block');
    request = AsnConvert.parse(x509.PemConverter.decode(blocks[0] as string)[0] as ArrayBuffer, CertificationRequest);
  } catch {
    return refuse('not a PKCS#10 certificate signing request');
  }
  const info = request.certificationRequestInfo;
  const spkiDer = AsnConvert.serialize(info.subjectPKInfo);
  let key;
  try {
    key = createPublicKey({ key: Buffer.from(spkiDer), format: 'der', type: 'spki' });
  } catch {
    return refuse("the CSR's public key cannot be read");
  }
  const details = key.asymmetricKeyDetails as { namedCurve?: string } | undefined;
  if (key.asymmetricKeyType !== 'ec' || details?.namedCurve !== 'prime256v1')
    refuse(
      `the key must be ECDSA P-256, not ${key.asymmetricKeyType ?? 'unknown'} ${details?.namedCurve ?? ''}`.trim(),
    );
  // Proof of possession: signed (ECDSA with SHA-256) by the key it carries.
  const signed = request.certificationRequestInfoRaw ?? AsnConvert.serialize(info);
  if (
    request.signatureAlgorithm.algorithm !== ECDSA_WITH_SHA256 ||
    !verify('sha256', new Uint8Array(signed), { key, dsaEncoding: 'der' }, new Uint8Array(request.signature))
  ) {
    refuse('the CSR signature does not verify (proof of possession of the key failed)');
  }

  for (const extension of requestedExtensions(info, refuse)) {
    if (extension.extnID === asn1X509.id_ce_basicConstraints) {
      if (AsnConvert.parse(extension.extnValue, asn1X509.BasicConstraints).cA)
        refuse('a workload may not ask for a CA certificate (basicConstraints CA=true)');
    } else if (extension.extnID === asn1X509.id_ce_subjectAltName) {
      const names = [...AsnConvert.parse(extension.extnValue, asn1X509.SubjectAlternativeName)].map(describeName);
      if (names.length !== 1 || names[0]?.type !== 'url')
        refuse(
          `an SVID has exactly one URI SAN; the CSR asks for ${names.map((name) => `${name.type}:${name.value}`).join(', ') || 'none'}`,
        );
      if (names[0]?.value !== spiffeId)
        refuse(`the CSR asks for ${JSON.stringify(names[0]?.value)}; this workload may only be ${spiffeId}`);
    } else if (extension.critical) {
      refuse(`the CSR carries a critical extension the CA does not understand (${extension.extnID})`);
    }
  }
  return info.subjectPKInfo;
}

const EXTENSION_REQUEST = '1.2.840.113549.1.9.14';

function requestedExtensions(
  info: CertificationRequest['certificationRequestInfo'],
  refuse: (rule: string) => never,
): asn1X509.Extension[] {
  const extensions: asn1X509.Extension[] = [];
  for (const attribute of info.attributes) {
    if (attribute.type !== EXTENSION_REQUEST) continue;
    for (const value of attribute.values) {
      try {
        extensions.push(...AsnConvert.parse(value, asn1X509.Extensions));
      } catch {
        refuse("the CSR's extension request cannot be read");
      }
    }
  }
  return extensions;
}

function describeName(name: asn1X509.GeneralName): { type: string; value: string } {
  if (name.uniformResourceIdentifier !== undefined) return { type: 'url', value: name.uniformResourceIdentifier };
  if (name.dNSName !== undefined) return { type: 'dns', value: name.dNSName };
  if (name.rfc822Name !== undefined) return { type: 'email', value: name.rfc822Name };
  if (name.iPAddress !== undefined) return { type: 'ip', value: '(address)' };
  return { type: 'other', value: '(name)' };
}
