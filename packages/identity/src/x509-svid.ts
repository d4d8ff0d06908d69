/**
 * The X509-SVID leaf rules, read from the certificate's DER (never from a text rendering). The
 * chain itself is verified by TLS; this is what the SPIFFE X509-SVID standard adds for a leaf used
 * to authenticate (§3.1, §4.1, §4.3, §5.2), plus Lockstep's bounded lifetime:
 *
 *   SVID_CA                    basicConstraints cA is false (an absent extension means false:
 *                              RFC 5280 §4.2.1.9, and go-spiffe reads it the same way)
 *   SVID_KEY_USAGE             key usage present, critical, with digitalSignature, without
 *                              keyCertSign and cRLSign
 *   SVID_URI_SAN               exactly one URI SAN
 *   SVID_ID_INVALID            a well-formed SPIFFE ID (spiffe-id.ts)
 *   SVID_NO_PATH               with a non-root path: `spiffe://<td>` names a signing certificate
 *   SVID_FOREIGN_TRUST_DOMAIN  in the expected trust domain, when one is given
 *   SVID_LIFETIME              notAfter − notBefore ≤ maxLifetimeSeconds (default 24 h): a stolen
 *                              SVID is only worth as long as it lives
 *   SVID_VALIDITY              inside its validity period at `now`, when `now` is given
 *
 * Differences from go-spiffe's x509svid verification, on purpose: the key usage must be critical
 * (the standard's §4.3 says MUST; go-spiffe does not look), the lifetime is bounded, and an
 * extension this reads appearing twice is refused (RFC 5280 §4.2 forbids it; which one would count?).
 */
// @peculiar/x509 loads tsyringe, which needs the Reflect metadata polyfill first; ESM evaluates imports in order.
import 'reflect-metadata';
import * as x509 from '@peculiar/x509';
import { isValidTrustDomain, parseSpiffeId, type SpiffeKind } from './spiffe-id.ts';

x509.cryptoProvider.set(globalThis.crypto);

export type SvidErrorCode =
  | 'SVID_UNPARSABLE'
  | 'SVID_CA'
  | 'SVID_KEY_USAGE'
  | 'SVID_URI_SAN'
  | 'SVID_ID_INVALID'
  | 'SVID_NO_PATH'
  | 'SVID_FOREIGN_TRUST_DOMAIN'
  | 'SVID_LIFETIME'
  | 'SVID_VALIDITY';

/** A certificate that is not an acceptable X509-SVID leaf: `code` is stable, `detail` says why. */
export class SvidError extends Error {
  readonly code: SvidErrorCode;
  readonly detail: string;

  constructor(code: SvidErrorCode, detail: string) {
    super(detail);
    this.name = 'SvidError';
    this.code = code;
    this.detail = detail;
  }
}

export interface X509SvidIdentity {
  readonly spiffeId: string;
  readonly trustDomain: string;
  readonly path: string;
  readonly kind: SpiffeKind | null;
  readonly name: string | null;
  /** `<name>` of `spiffe://<td>/svc/<name>`, else null. */
  readonly service: string | null;
  readonly notBeforeMs: number;
  readonly notAfterMs: number;
}

export interface ReadX509SvidOptions {
  /** The trust domain the SVID must belong to; leave out to accept any (e.g. to read before deciding). */
  readonly trustDomain?: string;
  /** Default 86 400 (24 h). */
  readonly maxLifetimeSeconds?: number;
  /** Also check the validity period at this time (ms since the epoch). TLS has usually done so already. */
  readonly now?: number;
}

export const DEFAULT_MAX_SVID_LIFETIME_SECONDS = 86_400;

const KEY_USAGE_OID = '2.5.29.15';
const BASIC_CONSTRAINTS_OID = '2.5.29.19';
const SUBJECT_ALT_NAME_OID = '2.5.29.17';
const FORBIDDEN_LEAF_USAGES: readonly (readonly [x509.KeyUsageFlags, string])[] = [
  [x509.KeyUsageFlags.keyCertSign, 'keyCertSign'],
  [x509.KeyUsageFlags.cRLSign, 'cRLSign'],
];

/** The identity of an X509-SVID leaf, or an SvidError naming the first rule it breaks. */
export function readX509Svid(der: Uint8Array | ArrayBuffer, options: ReadX509SvidOptions = {}): X509SvidIdentity {
  const maxLifetimeSeconds = checkOptions(options);
  const cert = parse(der);
  refuseDuplicateExtensions(cert);
  checkBasicConstraints(cert);
  checkKeyUsage(cert);
  const uri = singleUriSan(cert);
  const spiffe = parseSpiffeId(uri);
  if (spiffe === null) {
    const shown = JSON.stringify(uri.slice(0, 200));
    throw new SvidError('SVID_ID_INVALID', `the URI SAN is not a well-formed SPIFFE ID: ${shown}`);
  }
  if (spiffe.path === '') {
    const detail = `${spiffe.id} has no path: it names a trust domain (a signing certificate), not a workload`;
    throw new SvidError('SVID_NO_PATH', detail);
  }
  if (options.trustDomain !== undefined && spiffe.trustDomain !== options.trustDomain) {
    throw new SvidError('SVID_FOREIGN_TRUST_DOMAIN', `${spiffe.id} is not in trust domain ${options.trustDomain}`);
  }
  const notBeforeMs = cert.notBefore.getTime();
  const notAfterMs = cert.notAfter.getTime();
  checkLifetime(notBeforeMs, notAfterMs, maxLifetimeSeconds);
  if (options.now !== undefined) checkValidity(notBeforeMs, notAfterMs, options.now);
  return Object.freeze({
    spiffeId: spiffe.id,
    trustDomain: spiffe.trustDomain,
    path: spiffe.path,
    kind: spiffe.kind,
    name: spiffe.name,
    service: spiffe.service,
    notBeforeMs,
    notAfterMs,
  });
}

function checkOptions(options: ReadX509SvidOptions): number {
  const max = options.maxLifetimeSeconds ?? DEFAULT_MAX_SVID_LIFETIME_SECONDS;
  if (!Number.isSafeInteger(max) || max < 1) {
    throw new TypeError(`maxLifetimeSeconds must be a whole number of seconds ≥ 1, e.g. 86400; got ${max}`);
  }
  if (options.trustDomain !== undefined && !isValidTrustDomain(options.trustDomain)) {
    const got = JSON.stringify(options.trustDomain);
    throw new TypeError(`trustDomain must be a trust domain name such as "shop.example"; got ${got}`);
  }
  if (options.now !== undefined && !Number.isFinite(options.now)) {
    throw new TypeError(`now must be a time in ms since the epoch; got ${options.now}`);
  }
  return max;
}

function parse(der: Uint8Array | ArrayBuffer): x509.X509Certificate {
  try {
    // A copy: the certificate must not change under us if the caller reuses its buffer.
    return new x509.X509Certificate(der instanceof ArrayBuffer ? der.slice(0) : new Uint8Array(der));
  } catch (error) {
    throw new SvidError('SVID_UNPARSABLE', `the certificate could not be parsed (${(error as Error).message})`);
  }
}

function refuseDuplicateExtensions(cert: x509.X509Certificate): void {
  for (const oid of [BASIC_CONSTRAINTS_OID, KEY_USAGE_OID, SUBJECT_ALT_NAME_OID]) {
    if (cert.extensions.filter((extension) => extension.type === oid).length > 1) {
      throw new SvidError('SVID_UNPARSABLE', `the certificate carries extension ${oid} more than once`);
    }
  }
}

function checkBasicConstraints(cert: x509.X509Certificate): void {
  if (cert.getExtension(x509.BasicConstraintsExtension)?.ca === true) {
    throw new SvidError('SVID_CA', 'a CA certificate (basicConstraints cA=true) was presented as a leaf');
  }
}

function checkKeyUsage(cert: x509.X509Certificate): void {
  const problem = keyUsageProblem(cert.getExtension(x509.KeyUsagesExtension));
  if (problem !== null) throw new SvidError('SVID_KEY_USAGE', problem);
}

function keyUsageProblem(keyUsage: x509.KeyUsagesExtension | null): string | null {
  if (keyUsage === null) {
    return 'the certificate has no key usage extension; an SVID must carry one, critical, with digitalSignature';
  }
  if (!keyUsage.critical) return 'the key usage extension is not critical; an SVID must mark it critical';
  if ((keyUsage.usages & x509.KeyUsageFlags.digitalSignature) === 0) {
    return 'the key usage lacks digitalSignature, which a leaf SVID must set';
  }
  const forbidden = FORBIDDEN_LEAF_USAGES.find(([flag]) => (keyUsage.usages & flag) !== 0);
  if (forbidden === undefined) return null;
  return `the key usage sets ${forbidden[1]}, which only a signing certificate may set`;
}

function singleUriSan(cert: x509.X509Certificate): string {
  const san = cert.getExtension(x509.SubjectAlternativeNameExtension);
  const uris = (san?.names.items ?? []).filter((name) => name.type === 'url').map((name) => name.value);
  if (uris.length !== 1) {
    throw new SvidError('SVID_URI_SAN', `an SVID has exactly one URI SAN; this certificate has ${uris.length}`);
  }
  return uris[0] as string;
}

function checkLifetime(notBeforeMs: number, notAfterMs: number, maxLifetimeSeconds: number): void {
  const lifetimeSeconds = (notAfterMs - notBeforeMs) / 1000;
  if (lifetimeSeconds > maxLifetimeSeconds) {
    const max = describeSeconds(maxLifetimeSeconds);
    const exact = max === `${maxLifetimeSeconds} s` ? '' : ` (${maxLifetimeSeconds} s)`;
    const lifetime = describeSeconds(lifetimeSeconds);
    const detail = `the certificate is valid for ${lifetime}; an SVID may live at most ${max}${exact}`;
    throw new SvidError('SVID_LIFETIME', detail);
  }
}

function checkValidity(notBeforeMs: number, notAfterMs: number, now: number): void {
  if (now < notBeforeMs) {
    throw new SvidError('SVID_VALIDITY', `the certificate is not valid before ${new Date(notBeforeMs).toISOString()}`);
  }
  if (now >= notAfterMs) {
    throw new SvidError('SVID_VALIDITY', `the certificate expired at ${new Date(notAfterMs).toISOString()}`);
  }
}

function describeSeconds(seconds: number): string {
  if (seconds >= 2 * 86_400) return `${Math.round(seconds / 86_400)} days`;
  if (seconds >= 3_600) return `${Math.round(seconds / 360) / 10} h`;
  return `${Math.round(seconds)} s`;
}
