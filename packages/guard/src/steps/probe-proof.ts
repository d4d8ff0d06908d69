/**
 * Probe proofs: how a guard tells, for the audit trail only, a scanner's request that its transport
 * step refused (no client certificate, or one of the defective certificates of the scanner's
 * transport attacks) from anyone else's. Such a request is refused exactly as it would be without a
 * proof; the proof only puts `probe` (the scanner's SPIFFE ID) in its audit event, so that the
 * monitor counts it apart from real traffic. A request whose transport step passed needs no proof:
 * its verified SVID says whether it comes from a scanner.
 *
 * - The scan's kit holds a probe token: a JWT that the control plane signs with the Txn-Token key
 *   (`typ: lockstep-probe+jwt`; `sub` the scanner's SPIFFE ID, `aud` the trust domain, at most an
 *   hour from `iat` to `exp`, `cnf.jwk` the public key of the scanner's SVID, RFC 7800).
 * - With each request the scanner sends `Lockstep-Probe-Proof`: a JWS that key signs
 *   (`typ: lockstep-probe-proof+jwt`) holding the token (`ptk`), the request's method (`htm`) and
 *   target (`htu`), the SPIFFE ID of the service it is sent to (`aud`), `iat` and a unique `jti` —
 *   DPoP's model (RFC 9449).
 *
 * So only the holder of the scanner's private key can mark a request (a token copied from a probe is
 * useless without it); a proof seen by one service marks no request to another, nor the same request
 * twice at one guard (`jti` is remembered while `iat` is fresh: at most the clock skew, 30 s), nor
 * another method or path. (Another replica of the same service keeps its own memory: a proof copied
 * within those seconds could mark there one request of that method and path which its transport step
 * refuses anyway.) A proof that fails any check is ignored, silently: the request is then counted as
 * real traffic, the safe side. A probe token whose signing key (kid) is revoked marks nothing, also one
 * verified before the revocation: whoever holds a leaked Txn-Token key cannot hide its traffic among
 * probes once that key's kid is revoked.
 *
 * Cost. Every check that needs no signature runs first (format, method, target, service, time, a
 * `jti` not seen, a known and unrevoked kid, the token's claims and time window): junk that fails one
 * costs nothing else. Signatures are then checked within two budgets a second per guard, so that a
 * flood of proofs cannot buy an outsider more: probe tokens not verified before
 * (`MAX_NEW_TOKENS_PER_SECOND`, at most `MAX_NEW_TOKENS_PER_SOURCE` of them from one source address) —
 * what an outsider can forge, so its flood from one address does not keep the scanner's own token
 * from being verified; and proofs (`MAX_PROOFS_PER_SECOND`), checked only over a verified token, which
 * an outsider does not have. Beyond a budget a proof is not a probe.
 */
import type { webcrypto } from 'node:crypto';
import { randomUUID } from 'node:crypto';
import { compactVerify, CompactSign, importJWK, type JWK } from 'jose';
import { parseSpiffeId, workloadId } from '@lockstep/identity';
import { BoundedCache } from '../bounded-cache.ts';
import type { Revocations } from '../revocations.ts';
import type { TxnKeySource, VerificationKey } from '../txn-keys.ts';
import { parseTokenJson } from './txn-claims.ts';

/** The request header a scanner's probe proof travels in. */
export const PROBE_PROOF_HEADER = 'lockstep-probe-proof';
/** `typ` of the control plane's probe token (signed with the Txn-Token key: never a Txn-Token). */
export const PROBE_TOKEN_TYP = 'lockstep-probe+jwt';
export const PROBE_PROOF_TYP = 'lockstep-probe-proof+jwt';
/** The longest a probe token may live (the scan kit's lifetime). */
export const PROBE_TOKEN_MAX_SECONDS = 3_600;

const MAX_PROOF_BYTES = 8_192;
const MAX_PROOFS_PER_SECOND = 256;
const MAX_NEW_TOKENS_PER_SECOND = 64;
const MAX_NEW_TOKENS_PER_SOURCE = 8;
const TOKEN_CACHE_SIZE = 64;
const SEEN_LIMIT = 16_384;
const COMPACT_JWS = /^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+$/;
const KID = /^[A-Za-z0-9._:-]{1,128}$/;
const JTI = /^[A-Za-z0-9_-]{16,128}$/;

export interface ProbeProofStep {
  /**
   * The scanner's SPIFFE ID when `header` proves that this request (`method`, request target
   * `target`, from the address `source`) is its probe, or null. Never throws.
   */
  verify(
    header: string | string[] | undefined,
    method: string,
    target: string | undefined,
    source: string | undefined,
  ): Promise<string | null>;
}

export interface ProbeProofOptions {
  trustDomain: string;
  service: string;
  /** The Txn-Token Service's public keys: they also sign probe tokens. */
  keys: TxnKeySource;
  /** The guard's revocations: a revoked kid signs no probe token, a revoked scanner proves nothing. */
  revocations: Revocations;
  clockSkewSeconds: number;
  now?: () => number;
}

interface ProbeToken {
  readonly scanner: string;
  readonly kid: string;
  readonly key: webcrypto.CryptoKey;
  readonly expiresAtMs: number;
}

/** A probe token whose every claim holds, its signature not checked yet. */
interface UnverifiedProbeToken {
  readonly scanner: string;
  readonly kid: string;
  readonly signingKey: VerificationKey;
  readonly jwk: JWK;
  readonly expiresAtMs: number;
}

export function createProbeProofStep(options: ProbeProofOptions): ProbeProofStep {
  const now = options.now ?? Date.now;
  const skewMs = options.clockSkewSeconds * 1000;
  const self = workloadId(options.trustDomain, options.service);
  const { revocations } = options;
  // Verified probe tokens only: a forged one never enters, so a flood cannot push the scanner's out.
  const tokens = new BoundedCache<string, ProbeToken>(TOKEN_CACHE_SIZE);
  // Tokens being verified (at most the new-token budget of a second or two).
  const verifyingTokens = new Map<string, Promise<ProbeToken | null>>();
  // jti → until when it is remembered (its proof's iat plus the skew: after that, the iat check refuses it).
  const seen = new Map<string, number>();
  // Per second; at most MAX_NEW_TOKENS_PER_SECOND sources are ever counted.
  let budget = { second: 0, proofs: 0, newTokens: 0, newTokensBySource: new Map<string, number>() };

  revocations.onRevoke(({ kind, value }) => {
    if (kind === 'kid') tokens.purge((token) => token.kid === value);
  });

  function currentBudget(): typeof budget {
    const second = Math.floor(now() / 1000);
    if (budget.second !== second) budget = { second, proofs: 0, newTokens: 0, newTokensBySource: new Map() };
    return budget;
  }

  function spendOnProof(): boolean {
    return ++currentBudget().proofs <= MAX_PROOFS_PER_SECOND;
  }

  function spendOnNewToken(source: string): boolean {
    const current = currentBudget();
    const fromSource = current.newTokensBySource.get(source) ?? 0;
    if (current.newTokens >= MAX_NEW_TOKENS_PER_SECOND || fromSource >= MAX_NEW_TOKENS_PER_SOURCE) return false;
    current.newTokens++;
    current.newTokensBySource.set(source, fromSource + 1);
    return true;
  }

  /** Remembers `jti` until `untilMs`; false when it was seen before (a replay) or memory is full. */
  function firstSight(jti: string, untilMs: number): boolean {
    if (seen.has(jti)) return false;
    if (seen.size >= SEEN_LIMIT) {
      const at = now();
      for (const [old, until] of seen) if (until < at) seen.delete(old);
      if (seen.size >= SEEN_LIMIT) return false;
    }
    seen.set(jti, untilMs);
    return true;
  }

  /** Every check of a probe token that needs no signature; null when one fails. */
  function unverifiedProbeToken(token: string): UnverifiedProbeToken | null {
    if (!COMPACT_JWS.test(token)) return null;
    const [headerPart, payloadPart] = token.split('.') as [string, string, string];
    const header = decodedPart(headerPart, 'header');
    if (Object.keys(header).some((name) => name !== 'alg' && name !== 'typ' && name !== 'kid')) return null;
    if (header.alg !== 'ES256' || header.typ !== PROBE_TOKEN_TYP) return null;
    const { kid } = header;
    if (typeof kid !== 'string' || !KID.test(kid) || revocations.kid.has(kid)) return null;
    // A kid we do not know is not fetched for: an outsider must not make the guard call out.
    const signingKey = options.keys.get(kid);
    if (signingKey === undefined) return null;
    const { sub, aud, iat, exp, cnf } = decodedPart(payloadPart, 'claims');
    const scanner = typeof sub === 'string' ? parseSpiffeId(sub) : null;
    if (scanner?.trustDomain !== options.trustDomain || !scanner.path.startsWith('/scanner/')) return null;
    if (aud !== options.trustDomain || typeof iat !== 'number' || typeof exp !== 'number') return null;
    if (iat * 1000 > now() + skewMs || exp * 1000 <= now() || exp - iat > PROBE_TOKEN_MAX_SECONDS) return null;
    const jwk = typeof cnf === 'object' && cnf !== null ? (cnf as { jwk?: unknown }).jwk : undefined;
    if (typeof jwk !== 'object' || jwk === null || 'd' in jwk) return null;
    const { kty, crv, x, y } = jwk as JWK;
    if (kty !== 'EC' || crv !== 'P-256' || typeof x !== 'string' || typeof y !== 'string') return null;
    return { scanner: sub as string, kid, signingKey, jwk: { kty, crv, x, y }, expiresAtMs: exp * 1000 };
  }

  function verifiedProbeToken(token: string, source: string): Promise<ProbeToken | null> {
    const cached = tokens.get(token);
    if (cached !== undefined) return Promise.resolve(now() < cached.expiresAtMs ? cached : null);
    // The scanner's first proofs arrive together: they share one verification of its token.
    let verifying = verifyingTokens.get(token);
    if (verifying === undefined) {
      const unverified = unverifiedProbeToken(token);
      if (unverified === null || !spendOnNewToken(source)) return Promise.resolve(null);
      verifying = verifyProbeToken(token, unverified).finally(() => verifyingTokens.delete(token));
      verifyingTokens.set(token, verifying);
    }
    return verifying;
  }

  async function verifyProbeToken(token: string, unverified: UnverifiedProbeToken): Promise<ProbeToken | null> {
    // The signature covers the very parts whose claims were checked above.
    await compactVerify(token, unverified.signingKey, { algorithms: ['ES256'] });
    const key = (await importJWK(unverified.jwk, 'ES256')) as webcrypto.CryptoKey;
    // A revocation may have landed meanwhile (and purged the cache before this token was in it).
    if (revocations.kid.has(unverified.kid)) return null;
    const { scanner, kid, expiresAtMs } = unverified;
    const verified: ProbeToken = { scanner, kid, key, expiresAtMs };
    tokens.set(token, verified);
    return verified;
  }

  async function verifyProof(proof: string, method: string, target: string, source: string): Promise<string | null> {
    if (proof.length > MAX_PROOF_BYTES || !COMPACT_JWS.test(proof)) return null;
    const [headerPart, payloadPart] = proof.split('.') as [string, string, string];
    const header = decodedPart(headerPart, 'header');
    if (Object.keys(header).length !== 2 || header.alg !== 'ES256' || header.typ !== PROBE_PROOF_TYP) return null;
    // Checked before the signature, which covers these very claims: junk costs no verification.
    const { ptk, htm, htu, aud, iat, jti } = decodedPart(payloadPart, 'claims');
    if (typeof ptk !== 'string' || htm !== method || htu !== target || aud !== self) return null;
    if (typeof iat !== 'number' || Math.abs(iat * 1000 - now()) > skewMs) return null;
    if (typeof jti !== 'string' || !JTI.test(jti) || seen.has(jti)) return null;
    const token = await verifiedProbeToken(ptk, source);
    if (token === null || revocations.spiffeId.has(token.scanner) || !spendOnProof()) return null;
    await compactVerify(proof, token.key, { algorithms: ['ES256'] });
    return firstSight(jti, iat * 1000 + skewMs) ? token.scanner : null;
  }

  return {
    async verify(header, method, target, source) {
      if (typeof header !== 'string' || target === undefined) return null;
      try {
        return await verifyProof(header, method, target, source ?? '');
      } catch {
        // Malformed, badly signed, a key that will not import: not a proof, and nothing to report.
        return null;
      }
    },
  };
}

/** A base64url JWS part as a strict JSON object (no duplicate or prototype keys); throws otherwise. */
function decodedPart(part: string, what: 'header' | 'claims'): Readonly<Record<string, unknown>> {
  return parseTokenJson(Buffer.from(part, 'base64url').toString('utf8'), what);
}

export interface ProbeProofRequest {
  /** The control plane's probe token from the scan kit. */
  readonly token: string;
  /** The private key of the scanner's SVID (the token's `cnf.jwk`). */
  readonly key: webcrypto.CryptoKey;
  readonly method: string;
  /** The request target as sent: path and query. */
  readonly target: string;
  /** The SPIFFE ID of the service the request is sent to. */
  readonly audience: string;
  readonly now?: number;
}

/** A `Lockstep-Probe-Proof` header value (the scanner's side of `createProbeProofStep`). */
export async function createProbeProof(request: ProbeProofRequest): Promise<string> {
  const claims = {
    ptk: request.token,
    htm: request.method,
    htu: request.target,
    aud: request.audience,
    iat: Math.floor((request.now ?? Date.now()) / 1000),
    jti: randomUUID().replaceAll('-', ''),
  };
  return new CompactSign(new TextEncoder().encode(JSON.stringify(claims)))
    .setProtectedHeader({ alg: 'ES256', typ: PROBE_PROOF_TYP })
    .sign(request.key);
}
