/**
 * Step 1 for the decision service — transport, on a certificate chain presented as facts. A proxy in
 * front of a service (nginx, Envoy, Traefik) terminated the client's mTLS and forwards the client's
 * certificate; the decision service must not take the proxy's word that it verified it. So the
 * chain is verified here as TLS would have: each certificate issued by the next (OpenSSL's
 * `X509_check_issued`, through node:crypto, which also requires keyCertSign of an issuer that has a
 * key usage), its signature checked with the issuer's key, every issuer a CA, every certificate in
 * its validity period, ending at a certificate of the trust bundle. Then RFC 5280's path rules that
 * `openssl verify -x509_strict` applies and node:crypto does not (extensions read by
 * `readCaPathFacts`, @lockstep/identity): each CA's pathLenConstraint, no critical extension that is
 * not understood here, and no name-constrained CA anywhere on the path (URI name constraints are not
 * enforced here, so such a path is refused rather than half-checked). The leaf then goes through the
 * same X509-SVID rules as a TLS peer (`identityFromCertificate`, @lockstep/identity): never a string.
 *
 * A verified chain is remembered (bounded, keyed by its DER and the bundle in force) until the
 * earliest notAfter of its path: per decision the steady state costs a hash, a map lookup, an expiry
 * and a revocation check.
 */
import { createHash, X509Certificate } from 'node:crypto';
import { parseSpiffeId, readCaPathFacts } from '@lockstep/identity';
import { BoundedCache } from '../bounded-cache.ts';
import { GuardError } from '../errors.ts';
import { identityFromCertificate, type PeerIdentity } from './transport.ts';

export interface PresentedChainStep {
  /** The client's identity from the chain its proxy presented (PEM, or DER leaf first), or the refusal. */
  identify(chain: PresentedChain | undefined): PeerIdentity;
  /**
   * The identity a trusted caller asserts without a certificate (an AuthZEN subject): parsed by
   * @lockstep/identity, in this trust domain, not revoked. Only as good as the caller who asserts it.
   */
  identifyAsserted(spiffeId: string): PeerIdentity;
}

/** A client's certificate chain as a proxy forwards it: PEM text, or DER certificates, leaf first. */
export type PresentedChain = string | readonly Uint8Array[];

export interface PresentedChainOptions {
  trustDomain: string;
  /** The trust bundle in force (PEM); read on every miss, so that a rotated bundle applies at once. */
  trustBundle(): string;
  /**
   * Intermediates known here (PEM; e.g. those of this workload's own SVID chain), for a proxy that
   * forwards the client's leaf only (nginx's `$ssl_client_escaped_cert`). Not trusted: a path through
   * them must still end at the trust bundle, as a path through presented intermediates must.
   */
  intermediates?(): string;
  isRevokedSpiffeId(id: string): boolean;
  maxSvidLifetimeSeconds?: number;
  now?: () => number;
  /** Verified chains remembered. Default 10 000. */
  cacheSize?: number;
}

/** Leaf, intermediates: SVIDs are issued by the root or one intermediate; a long chain is refused. */
export const MAX_PRESENTED_CHAIN = 4;

const PEM_BLOCK = /-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g;

export function createPresentedChainStep(options: PresentedChainOptions): PresentedChainStep {
  const now = options.now ?? Date.now;
  /** The identity, and the end of its path's validity (the earliest notAfter of leaf, intermediates, anchor). */
  const verified = new BoundedCache<string, { identity: PeerIdentity; pathNotAfterMs: number }>(
    options.cacheSize ?? 10_000,
  );
  let rootsOf: { pem: string; roots: readonly X509Certificate[] } | null = null;
  let knownOf: { pem: string; known: readonly X509Certificate[] } = { pem: '', known: [] };

  function known(): readonly X509Certificate[] {
    const pem = options.intermediates?.() ?? '';
    if (knownOf.pem !== pem) {
      knownOf = { pem, known: (pem.match(PEM_BLOCK) ?? []).map((block) => new X509Certificate(block)) };
      verified.clear(); // a remembered path may have gone through an intermediate no longer known
    }
    return knownOf.known;
  }

  function roots(): readonly X509Certificate[] {
    const pem = options.trustBundle();
    if (rootsOf?.pem !== pem) {
      rootsOf = { pem, roots: (pem.match(PEM_BLOCK) ?? []).map((block) => new X509Certificate(block)) };
      verified.clear();
    }
    return rootsOf.roots;
  }

  function establish(certificates: readonly X509Certificate[]): { identity: PeerIdentity; pathNotAfterMs: number } {
    const path = verifyChain(certificates, roots(), now(), known());
    const leaf = new Uint8Array((certificates[0] as X509Certificate).raw);
    const identity = identityFromCertificate(leaf, options.trustDomain, options.maxSvidLifetimeSeconds);
    return { identity, pathNotAfterMs: Math.min(...path.map((certificate) => certificate.validToDate.getTime())) };
  }

  return {
    identify(chain) {
      if (chain === undefined || chain.length === 0) throw new GuardError('LOCKSTEP_ERR_PEER_CERT_MISSING');
      roots(); // clears the cache first when the bundle changed
      known(); // and when the known intermediates changed
      const key = chainKey(chain);
      let entry = verified.get(key);
      if (entry === undefined) {
        entry = establish(parseChain(chain));
        verified.set(key, entry);
      }
      const { identity } = entry;
      if (now() >= identity.notAfterMs) throw new GuardError('LOCKSTEP_ERR_PEER_UNTRUSTED', 'certificate expired');
      if (now() >= entry.pathNotAfterMs) {
        verified.delete(key);
        throw new GuardError('LOCKSTEP_ERR_PEER_UNTRUSTED', 'a certificate of the chain expired');
      }
      if (options.isRevokedSpiffeId(identity.spiffeId))
        throw new GuardError('LOCKSTEP_ERR_PEER_REVOKED', `${identity.spiffeId} is revoked`);
      return identity;
    },
    identifyAsserted(spiffeId) {
      const parsed = parseSpiffeId(spiffeId);
      if (parsed === null || parsed.path === '')
        throw new GuardError('LOCKSTEP_ERR_PEER_ID_INVALID', 'the subject is not a workload SPIFFE ID');
      if (parsed.trustDomain !== options.trustDomain)
        throw new GuardError(
          'LOCKSTEP_ERR_PEER_FOREIGN_TRUST_DOMAIN',
          `${parsed.trustDomain} is not this trust domain`,
        );
      if (options.isRevokedSpiffeId(parsed.id))
        throw new GuardError('LOCKSTEP_ERR_PEER_REVOKED', `${parsed.id} is revoked`);
      return Object.freeze({
        spiffeId: parsed.id,
        service: parsed.service ?? '',
        notAfterMs: Number.POSITIVE_INFINITY,
        // A scanner is known by its certificate only: an asserted identity is never a probe.
        scanner: false,
      });
    },
  };
}

function chainKey(chain: PresentedChain): string {
  const hash = createHash('sha256');
  if (typeof chain === 'string') return hash.update('pem:').update(chain).digest('base64');
  for (const der of chain) hash.update(`der:${der.length}:`).update(der);
  return hash.digest('base64');
}

/** Only PEM armour is read here; what a certificate says is read from its DER. */
function parseChain(chain: PresentedChain): X509Certificate[] {
  const blocks = typeof chain === 'string' ? (chain.match(PEM_BLOCK) ?? []) : chain;
  // Text without a certificate is not "no certificate": something was presented and it is not one.
  if (blocks.length === 0) throw new GuardError('LOCKSTEP_ERR_PEER_ID_INVALID', 'no certificate in the PEM text');
  if (blocks.length > MAX_PRESENTED_CHAIN)
    throw new GuardError('LOCKSTEP_ERR_PEER_UNTRUSTED', `a chain of ${blocks.length} certificates is too long`);
  try {
    return blocks.map((block) => new X509Certificate(block));
  } catch {
    throw new GuardError('LOCKSTEP_ERR_PEER_ID_INVALID', 'the presented certificate cannot be parsed');
  }
}

function withinValidity(certificate: X509Certificate, nowMs: number): boolean {
  return certificate.validFromDate.getTime() <= nowMs && nowMs < certificate.validToDate.getTime();
}

function issuedBy(subject: X509Certificate, issuer: X509Certificate): boolean {
  return subject.checkIssued(issuer) && subject.verify(issuer.publicKey);
}

/**
 * Walks from the leaf to a certificate of the trust bundle through the presented intermediates then
 * the known ones, each used once; an anchor ends the walk. Returns the path, leaf first, anchor last,
 * once it also passes the path rules (`checkPathRules`); else throws the refusal.
 */
export function verifyChain(
  chain: readonly X509Certificate[],
  roots: readonly X509Certificate[],
  nowMs: number,
  known: readonly X509Certificate[] = [],
): X509Certificate[] {
  const leaf = chain[0];
  if (leaf === undefined) throw new GuardError('LOCKSTEP_ERR_PEER_CERT_MISSING');
  if (!withinValidity(leaf, nowMs)) {
    const expired = nowMs >= leaf.validToDate.getTime();
    throw new GuardError('LOCKSTEP_ERR_PEER_UNTRUSTED', `certificate ${expired ? 'expired' : 'not yet valid'}`);
  }
  const unused = [...chain.slice(1), ...known];
  const path = [leaf];
  let current = leaf;
  for (let depth = 0; depth < MAX_PRESENTED_CHAIN; depth++) {
    const anchor = roots.find((root) => root.ca && withinValidity(root, nowMs) && issuedBy(current, root));
    if (anchor !== undefined) {
      path.push(anchor);
      checkPathRules(path);
      return path;
    }
    const index = unused.findIndex((next) => next.ca && withinValidity(next, nowMs) && issuedBy(current, next));
    if (index < 0) break;
    current = unused[index] as X509Certificate;
    path.push(current);
    unused.splice(index, 1);
  }
  throw new GuardError('LOCKSTEP_ERR_PEER_UNTRUSTED', 'certificate chain not trusted (no path to the trust bundle)');
}

/**
 * RFC 5280's rules on a path (leaf first, anchor last) that node:crypto's issuance check leaves out,
 * as `openssl verify -x509_strict` applies them; each broken rule is the refusal.
 */
function checkPathRules(path: readonly X509Certificate[]): void {
  path.forEach((certificate, index) => {
    const facts = readCaPathFacts(new Uint8Array(certificate.raw));
    const which = index === 0 ? 'the client certificate' : `CA ${certificate.subject.replaceAll('\n', ', ')}`;
    if (facts.unhandledCritical.length > 0)
      throw new GuardError(
        'LOCKSTEP_ERR_PEER_UNTRUSTED',
        `${which} has a critical extension this service does not understand (${facts.unhandledCritical.join(', ')})`,
      );
    if (facts.nameConstrained)
      throw new GuardError(
        'LOCKSTEP_ERR_PEER_UNTRUSTED',
        `${which} carries name constraints: name-constrained CAs are not supported through the decision service; issue the clients' SVIDs from an unconstrained CA`,
      );
    // The CAs between the leaf and this one (self-issued ones counted too: stricter, never looser).
    const below = index - 1;
    if (index > 0 && facts.pathLength !== undefined && below > facts.pathLength)
      throw new GuardError(
        'LOCKSTEP_ERR_PEER_UNTRUSTED',
        `${which} allows ${facts.pathLength} CA(s) below it (pathLenConstraint) and the chain has ${below}`,
      );
  });
}
