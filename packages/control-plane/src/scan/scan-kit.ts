/**
 * The scanner's kit, issued to an administrator for `lockstep scan` (POST /v1/admin/scan-kit):
 *
 * - an X.509-SVID `spiffe://<td>/scanner/<name>` for the scanner's own key (from its CSR). No shipped
 *   policy permits a scanner, and guards never run a handler for one: its requests are probes;
 * - probe certificates for the same key, signed by the real CA, each defective in one way a guard
 *   must refuse (expired, not yet valid, two URI SANs, none, lookalike or mis-encoded trust domain,
 *   and the X509-SVID leaf rules: keyCertSign or cRLSign on a leaf, no key usage, a non-critical key
 *   usage, a SPIFFE ID without a path, a lifetime over 24 h). They all name scanner identities (or
 *   the trust domain, or none), so a guard that wrongly accepts one still runs no handler. No CA
 *   certificate is ever issued (basicConstraints is CA=false on every probe, also on the keyCertSign
 *   one, so no validator takes it as an issuer; a "CA as leaf" probe would be a CA for the scanner's
 *   key): that case is covered by the guard's own tests;
 * - test Txn-Tokens (genuine for the test users, and the defective set of scan-tokens.ts);
 * - a revoked subject and transaction, revoked through the feed, that the kit's tokens carry;
 * - the scan's probe token (scan-tokens.ts), so that guards record its transport attacks as probes;
 * - what the control plane knows of each test user: revoked, or holding roles no policy tests for.
 *   A test user the guards refuse, or whose roles mean nothing to the policy, cannot stand in for a
 *   real one: the scanner reports the checks that act as that user inconclusive, with this reason.
 *
 * Everything in the kit expires within the hour.
 */
import type { webcrypto } from 'node:crypto';
import type { JsonGeneralName } from '@peculiar/x509';
import { AsnConvert } from '@peculiar/asn1-schema';
import { exportJWK } from 'jose';
import { formatSpiffeId, trustDomainId } from '@lockstep/identity';
import { rolesNamed, type PolicySet } from '@lockstep/policy';
import { x509 } from '../lib/x509.ts';
import { checkCsr, isServiceName, signLeaf } from '../ca/issue-svid.ts';
import { randomSerial, type WorkloadCa } from '../ca/workload-ca.ts';
import { ControlPlaneError } from '../errors.ts';
import type { RevocationFeed } from '../store/revocation-feed.ts';
import type { ControlPlaneStore } from '../store/store.ts';
import type { ScanTokenRequest, ScanTokens, ScanUser } from '../tts/scan-tokens.ts';

export type ProbeCertificate =
  | 'expired'
  | 'not-yet-valid'
  | 'two-uri-sans'
  | 'no-uri-san'
  | 'lookalike-suffix'
  | 'lookalike-prefix'
  | 'upper-case-trust-domain'
  | 'percent-encoded-trust-domain'
  // The X509-SVID leaf rules (SPIFFE X509-SVID §4.3 key usage, §2 a workload path, a bounded lifetime).
  | 'key-cert-sign'
  | 'crl-sign'
  | 'no-key-usage'
  | 'key-usage-not-critical'
  | 'no-path'
  | 'lifetime-over-max';

export interface ScanKitRequest {
  readonly name: string;
  readonly csrPem: string;
  readonly users: readonly ScanUser[];
  readonly actor: string;
}

/** What the control plane knows of one test user of a scan. */
export interface TestUserStatus {
  readonly sub: string;
  /** The revocation of this subject (guards refuse its tokens), or null. */
  readonly revoked: { readonly reason: string; readonly actor: string; readonly at: string } | null;
  /**
   * Its roles that no policy in force tests for, or null when the control plane cannot tell (no
   * policy in force, or one that reads the roles in a way other than testing for a name).
   */
  readonly unknownRoles: readonly string[] | null;
  /** Every role the policy in force tests for (null as above): what the manifest may give. */
  readonly policyRoles: readonly string[] | null;
}

/** What issuing a kit needs from the control plane. */
export interface ScanKitIssuer {
  readonly ca: WorkloadCa;
  readonly feed: RevocationFeed;
  readonly store: ControlPlaneStore;
  readonly scanTokens: (request: ScanTokenRequest) => Promise<ScanTokens>;
  /** The policy set in force, or null. */
  readonly policy: () => PolicySet | null;
}

export interface ScanKit {
  readonly scanner: string;
  readonly trustDomain: string;
  /** Leaf then intermediate, PEM. */
  readonly svid: string;
  readonly trustBundle: string;
  readonly probeCertificates: Readonly<Record<ProbeCertificate, string>>;
  readonly tokens: ScanTokens;
  readonly revoked: { readonly sub: string; readonly txn: string };
  /** The test users asked for, in request order. */
  readonly users: readonly TestUserStatus[];
  readonly expiresAt: string;
}

const KIT_TTL_SECONDS = 3_600;
const HOUR_MS = 3_600_000;
const YEAR_MS = 365 * 24 * HOUR_MS;

/** How a probe's key usage extension is written: flags and criticality, or left out. */
type ProbeKeyUsage = { readonly flags: number; readonly critical: boolean } | null;
const SVID_KEY_USAGE: ProbeKeyUsage = { flags: x509.KeyUsageFlags.digitalSignature, critical: true };

export async function issueScanKit(issuer: ScanKitIssuer, request: ScanKitRequest): Promise<ScanKit> {
  const { ca, feed } = issuer;
  if (!isServiceName(request.name))
    throw new ControlPlaneError(
      'LOCKSTEP_CP_REQUEST_INVALID',
      `a scanner name is a lower-case DNS label such as "ci"; got ${JSON.stringify(String(request.name).slice(0, 80))}`,
    );
  const td = ca.trustDomain;
  const scanner = formatSpiffeId(td, 'scanner', request.name);
  const spki = checkCsr(request.csrPem, scanner);
  const svid = await signLeaf(ca, spki, scanner, KIT_TTL_SECONDS);
  // Fixed values per scanner name: one revocation each, however often it scans.
  const revoked = { sub: `lockstep-scan-revoked:${request.name}`, txn: `lockstep-scan-revoked-txn:${request.name}` };
  for (const [kind, value] of [
    ['sub', revoked.sub],
    ['txn', revoked.txn],
  ] as const) {
    await feed.revoke({
      kind,
      value,
      reason: `scanner ${request.name}: a revoked test value`,
      actor: request.actor,
      at: Date.now(),
    });
  }
  const publicKey = await crypto.subtle.importKey(
    'spki',
    AsnConvert.serialize(spki),
    { name: 'ECDSA', namedCurve: 'P-256' },
    true,
    ['verify'],
  );
  const now = ca.now();
  const url = (value: string): JsonGeneralName => ({ type: 'url', value });
  const encodedTd = td.includes('.')
    ? td.replace('.', '%2E')
    : `%${td.charCodeAt(0).toString(16).toUpperCase()}${td.slice(1)}`;
  const validFrom = now - 60_000;
  const validTo = now + KIT_TTL_SECONDS * 1000;
  const probe = (sans: JsonGeneralName[], from = validFrom, to = validTo, keyUsage = SVID_KEY_USAGE) => {
    return probeCertificate(ca, publicKey, sans, new Date(from), new Date(to), keyUsage);
  };
  const withKeyUsage = (flags: number, critical = true) => {
    return probe([url(scanner)], validFrom, validTo, { flags, critical });
  };
  const { digitalSignature, keyCertSign, cRLSign } = x509.KeyUsageFlags;
  const probeCertificates: Record<ProbeCertificate, string> = {
    expired: await probe([url(scanner)], now - 2 * HOUR_MS, now - HOUR_MS),
    'not-yet-valid': await probe([url(scanner)], now + HOUR_MS, now + 2 * HOUR_MS),
    'two-uri-sans': await probe([url(scanner), url(`${scanner}-second`)]),
    'no-uri-san': await probe([{ type: 'dns', value: `${request.name}.scanner.invalid` }]),
    'lookalike-suffix': await probe([url(formatSpiffeId(`${td}.evil`, 'scanner', request.name))]),
    'lookalike-prefix': await probe([url(formatSpiffeId(`evil${td}`, 'scanner', request.name))]),
    // Malformed on purpose, so built by hand: the formatter refuses to write them.
    'upper-case-trust-domain': await probe([url(`spiffe://${td.toUpperCase()}/scanner/${request.name}`)]),
    'percent-encoded-trust-domain': await probe([url(`spiffe://${encodedTd}/scanner/${request.name}`)]),
    'key-cert-sign': await withKeyUsage(digitalSignature | keyCertSign),
    'crl-sign': await withKeyUsage(digitalSignature | cRLSign),
    'no-key-usage': await probe([url(scanner)], validFrom, validTo, null),
    'key-usage-not-critical': await withKeyUsage(digitalSignature, false),
    'no-path': await probe([url(trustDomainId(td))]),
    // Ten years from notBefore to notAfter, yet it expires with the kit: the lifetime rule is broken
    // without handing out a long-lived credential.
    'lifetime-over-max': await probe([url(scanner)], validTo - 10 * YEAR_MS, validTo),
  };
  const scannerKey = await exportJWK(publicKey);
  const tokens = await issuer.scanTokens({
    scanner,
    users: request.users,
    revokedSub: revoked.sub,
    revokedTxn: revoked.txn,
    scannerKey,
  });
  const users = await testUserStatus(issuer, request.users);
  return {
    scanner,
    trustDomain: td,
    svid: svid.chainPem,
    trustBundle: ca.bundlePem,
    probeCertificates,
    tokens,
    revoked,
    users,
    expiresAt: svid.notAfter.toISOString(),
  };
}

async function testUserStatus(issuer: ScanKitIssuer, users: readonly ScanUser[]): Promise<TestUserStatus[]> {
  const set = issuer.policy();
  const named = set === null ? null : rolesNamed(set);
  const policyRoles = named?.complete === true ? named.roles : null;
  let revocations: Awaited<ReturnType<ControlPlaneStore['revocationsSince']>> | null = null;
  return Promise.all(
    users.map(async (user): Promise<TestUserStatus> => {
      let revoked: TestUserStatus['revoked'] = null;
      if (await issuer.store.isRevoked('sub', user.sub)) {
        revocations ??= await issuer.store.revocationsSince(0);
        const entry = revocations.findLast((record) => record.kind === 'sub' && record.value === user.sub);
        const at = entry === undefined ? 'unknown' : new Date(entry.at).toISOString();
        revoked = { reason: entry?.reason ?? 'unknown', actor: entry?.actor ?? 'unknown', at };
      }
      const unknownRoles = policyRoles === null ? null : user.roles.filter((role) => !policyRoles.includes(role));
      return { sub: user.sub, revoked, unknownRoles, policyRoles };
    }),
  );
}

async function probeCertificate(
  ca: WorkloadCa,
  publicKey: webcrypto.CryptoKey,
  sans: JsonGeneralName[],
  notBefore: Date,
  notAfter: Date,
  keyUsage: ProbeKeyUsage,
): Promise<string> {
  const cert = await x509.X509CertificateGenerator.create({
    serialNumber: randomSerial(),
    issuer: ca.signer.cert.subject,
    subject: 'CN=lockstep scan probe',
    notBefore,
    notAfter,
    signingAlgorithm: { name: 'ECDSA', hash: 'SHA-256' },
    publicKey,
    signingKey: ca.signer.privateKey,
    extensions: [
      new x509.BasicConstraintsExtension(false, undefined, true),
      ...(keyUsage === null ? [] : [new x509.KeyUsagesExtension(keyUsage.flags, keyUsage.critical)]),
      new x509.ExtendedKeyUsageExtension([x509.ExtendedKeyUsage.clientAuth], false),
      new x509.SubjectAlternativeNameExtension(sans, false),
    ],
  });
  return `${x509.PemConverter.encode(cert.rawData, 'CERTIFICATE')}\n${ca.intermediatePem}`;
}
