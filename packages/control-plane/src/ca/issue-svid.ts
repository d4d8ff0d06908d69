/**
 * Issues an X.509-SVID from a workload's CSR (its private key never leaves it). The CSR is checked
 * as a table of small rules — each refusal names the rule — and only its public key is used: the
 * certificate's contents are ours. Exactly one URI SAN `spiffe://<td>/svc/<name>`, CA=false,
 * digitalSignature, serverAuth + clientAuth, 1 h by default, never beyond the intermediate.
 */
import type { webcrypto } from 'node:crypto';
import { ControlPlaneError } from '../errors.ts';
import { x509 } from '../lib/x509.ts';
import { randomSerial, type WorkloadCa } from './workload-ca.ts';

export interface IssuedSvid {
  readonly spiffeId: string;
  readonly serial: string;
  /** Leaf then intermediate, PEM: what the workload serves. */
  readonly chainPem: string;
  readonly notBefore: Date;
  readonly notAfter: Date;
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
// Issued a little in the past, so that a peer whose clock is slightly behind already accepts it.
const BACKDATE_MS = 60_000;

/** A service name is a lower-case DNS label: it becomes the last segment of a SPIFFE ID. */
export function isServiceName(service: unknown): service is string {
  return typeof service === 'string' && SERVICE_NAME.test(service);
}

export function spiffeIdFor(trustDomain: string, service: string): string {
  if (!isServiceName(service)) throw new ControlPlaneError('LOCKSTEP_CP_CSR_INVALID', `service name ${JSON.stringify(String(service).slice(0, 80))} is not a lower-case DNS label`);
  return `spiffe://${trustDomain}/svc/${service}`;
}

export async function issueSvidFromCsr(ca: WorkloadCa, request: IssueSvidRequest): Promise<IssuedSvid> {
  const spiffeId = spiffeIdFor(ca.trustDomain, request.service);
  const ttlSeconds = request.ttlSeconds ?? DEFAULT_TTL_SECONDS;
  if (!Number.isInteger(ttlSeconds) || ttlSeconds < 60 || ttlSeconds > MAX_TTL_SECONDS) {
    throw new TypeError(`ttlSeconds must be a whole number of seconds from 60 to ${MAX_TTL_SECONDS}; got ${ttlSeconds}`);
  }
  const csr = await checkCsr(request.csrPem, spiffeId);

  return signLeaf(ca, await csr.publicKey.export(), spiffeId, ttlSeconds);
}

/**
 * Signs a leaf for `spiffeId` with the intermediate: X.509-SVID profile, backdated a minute, never
 * past the intermediate's own expiry. Used for workloads (from their CSR) and for the control
 * plane's own server certificate.
 */
export async function signLeaf(ca: WorkloadCa, publicKey: webcrypto.CryptoKey, spiffeId: string, ttlSeconds: number): Promise<IssuedSvid> {
  const fixed = await fixedExtensions(ca);
  const now = ca.now();
  const notBefore = new Date(now - BACKDATE_MS);
  const notAfter = new Date(Math.min(now + ttlSeconds * 1000, ca.signer.cert.notAfter.getTime()));
  const serial = randomSerial();
  const cert = await x509.X509CertificateGenerator.create({
    serialNumber: serial,
    // X.509-SVID: the identity is the URI SAN; the subject stays empty, so the SAN is critical (RFC 5280 §4.2.1.6).
    subject: '',
    issuer: ca.signer.cert.subjectName,
    publicKey,
    signingKey: ca.signer.privateKey,
    notBefore,
    notAfter,
    signingAlgorithm: { name: 'ECDSA', hash: 'SHA-256' },
    extensions: [
      ...fixed,
      new x509.SubjectAlternativeNameExtension([{ type: 'url', value: spiffeId }], true),
      await x509.SubjectKeyIdentifierExtension.create(publicKey),
    ],
  });
  return { spiffeId, serial, chainPem: `${cert.toString('pem')}\n${ca.intermediatePem}`, notBefore, notAfter };
}

// The extensions every leaf of a CA shares, built once per CA (the authority key id costs a hash).
const fixedByCa = new WeakMap<WorkloadCa['signer'], Promise<x509.Extension[]>>();
function fixedExtensions(ca: WorkloadCa): Promise<x509.Extension[]> {
  let fixed = fixedByCa.get(ca.signer);
  if (fixed === undefined) {
    fixed = (async () => [
      new x509.BasicConstraintsExtension(false, undefined, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature, true),
      new x509.ExtendedKeyUsageExtension([x509.ExtendedKeyUsage.serverAuth, x509.ExtendedKeyUsage.clientAuth], false),
      await x509.AuthorityKeyIdentifierExtension.create(ca.signer.cert),
    ])();
    fixedByCa.set(ca.signer, fixed);
  }
  return fixed;
}

/** The CSR rules; the first that fails refuses the request. */
async function checkCsr(csrPem: string, spiffeId: string): Promise<x509.Pkcs10CertificateRequest> {
  const refuse = (rule: string): never => { throw new ControlPlaneError('LOCKSTEP_CP_CSR_INVALID', rule); };
  if (typeof csrPem !== 'string' || csrPem.length > MAX_CSR_BYTES) refuse(`a CSR is a PEM string of at most ${MAX_CSR_BYTES} bytes`);
  let csr: x509.Pkcs10CertificateRequest;
  try {
    csr = new x509.Pkcs10CertificateRequest(csrPem);
  } catch {
    return refuse('not a PKCS#10 certificate signing request');
  }
  const algorithm = csr.publicKey.algorithm as { name?: string; namedCurve?: string };
  if (algorithm.name !== 'ECDSA' || algorithm.namedCurve !== 'P-256') refuse(`the key must be ECDSA P-256, not ${algorithm.name ?? 'unknown'} ${algorithm.namedCurve ?? ''}`.trim());
  if (!(await csr.verify())) refuse('the CSR signature does not verify (proof of possession of the key failed)');

  for (const extension of csr.extensions) {
    if (extension instanceof x509.BasicConstraintsExtension) {
      if (extension.ca) refuse('a workload may not ask for a CA certificate (basicConstraints CA=true)');
    } else if (extension instanceof x509.SubjectAlternativeNameExtension) {
      const names = extension.names.items;
      if (names.length !== 1 || names[0]?.type !== 'url') refuse(`an SVID has exactly one URI SAN; the CSR asks for ${names.map((name) => `${name.type}:${name.value}`).join(', ') || 'none'}`);
      if (names[0]?.value !== spiffeId) refuse(`the CSR asks for ${JSON.stringify(names[0]?.value)}; this workload may only be ${spiffeId}`);
    } else if (extension.critical) {
      refuse(`the CSR carries a critical extension the CA does not understand (${extension.type})`);
    }
  }
  return csr;
}
