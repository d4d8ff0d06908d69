/**
 * Step 2 — transaction. Verifies the `Txn-Token` header to the letter of
 * draft-ietf-oauth-transaction-tokens-10: compact JWS, exactly the header parameters alg/typ/kid, alg
 * pinned to ES256, `typ` `txntoken+jwt` (§9.1), a known and unrevoked kid, signature (jose), then
 * every claim of §9.2 with its type (txn-claims.ts): aud equal to our trust domain, iat/exp required,
 * lifetime ≤ the maximum, iat/nbf not in the future (30 s skew), txn, sub, scope and req_wl required,
 * tctx/rctx objects; no duplicate or prototype keys and no control characters anywhere.
 *
 * A verified token is cached until its `exp`: the steady state is one Map lookup, an expiry check and
 * (only while anything is revoked) set lookups — no signature verification.
 */
import { compactVerify, errors as joseErrors } from 'jose';
import { BoundedCache } from '../bounded-cache.ts';
import { GuardError } from '../errors.ts';
import type { Revocations } from '../revocations.ts';
import type { TxnKeySource } from '../txn-keys.ts';
import { checkTxnClaims, parseTokenJson, type TxnTokenClaims } from './txn-claims.ts';

export const TXN_TOKEN_TYP = 'txntoken+jwt';
const ALLOWED_HEADER_PARAMETERS = new Set(['alg', 'typ', 'kid']);
const COMPACT_JWS = /^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*$/;
const KID = /^[A-Za-z0-9._:-]{1,128}$/;
const NO_ROLES: readonly string[] = Object.freeze([]);

/** What the rest of the pipeline needs from a verified token, computed once per token. */
export interface VerifiedTxnToken {
  readonly token: string;
  readonly claims: TxnTokenClaims;
  readonly kid: string;
  readonly expiresAtMs: number;
  readonly roles: readonly string[];
  readonly scope: readonly string[];
  readonly tenant: string | undefined;
  /**
   * The workload that started the transaction: `req_wl` of the first token, kept through
   * replacements (`req_wl_chain[0]` once replaced). The policy's `context.requester`.
   */
  readonly requester: string;
  /**
   * The one mutable part: where the authorization step keeps its last answer for this token, so that
   * the steady state reads it from the token it already holds instead of a second lookup.
   */
  readonly lastDecision: DecisionMemo;
}

export interface DecisionMemo {
  action: string | null;
  spiffeId: string | null;
  answer: unknown;
}

export interface TxnTokenStepOptions {
  trustDomain: string;
  keys: TxnKeySource;
  revocations: Revocations;
  maxLifetimeSeconds: number;
  clockSkewSeconds: number;
  maxTokenBytes: number;
  cacheSize: number;
  /** The cache's budget in estimated bytes (see TOKEN_ENTRY_BYTES). */
  cacheBytes?: number;
  now?: () => number;
}

export interface TxnTokenStep {
  /** `header` is the raw `txn-token` header value as Node parsed it (duplicates joined by ", "). */
  verify(
    header: string | string[] | undefined,
    rawHeaders: readonly string[],
  ): Promise<VerifiedTxnToken> | VerifiedTxnToken;
  /** `verified` counts signature verifications (cold path); `hits` counts tokens served from the cache. */
  stats(): { hits: number; verified: number; size: number; bytes: number };
}

/**
 * What a cached token holds besides its text: its claims and their strings, roles and scope, the
 * entry, the authorization step's answers remembered for it, and the Map's slot. Text counts 2 bytes
 * a character. With the decision cache's share, a shop token of ~600 characters holds 3.1–3.7 KB in
 * all (`npm run bench:guard` measures it, bench/lib/cache-bytes.ts); charged 3.0 + 0.9 KB.
 */
export const TOKEN_ENTRY_BYTES = 1_800;
const tokenEntryBytes = (entry: VerifiedTxnToken) => TOKEN_ENTRY_BYTES + 2 * entry.token.length;

export function createTxnTokenStep(options: TxnTokenStepOptions): TxnTokenStep {
  // Keyed by the signature segment (hashing ~86 characters instead of the whole token on every
  // request); a hit counts only when the whole token is equal, so two tokens can never be confused.
  const now = options.now ?? Date.now;
  const skewMs = options.clockSkewSeconds * 1000;
  const cache = new BoundedCache<string, VerifiedTxnToken>({
    entries: options.cacheSize,
    ...(options.cacheBytes === undefined ? {} : { bytes: options.cacheBytes }),
    bytesOf: tokenEntryBytes,
    expired: (entry) => now() >= entry.expiresAtMs + skewMs,
  });
  const cacheKey = (token: string) => token.slice(token.lastIndexOf('.') + 1);
  const { revocations } = options;
  let hits = 0;
  let verified = 0;

  revocations.onRevoke(({ kind, value }) => {
    if (kind === 'kid') cache.purge((entry) => entry.kid === value);
    else if (kind === 'sub') cache.purge((entry) => entry.claims.sub === value);
    else if (kind === 'txn') cache.purge((entry) => entry.claims.txn === value);
  });

  function checkLive(entry: VerifiedTxnToken): VerifiedTxnToken {
    if (now() >= entry.expiresAtMs + skewMs) {
      cache.delete(cacheKey(entry.token));
      throw new GuardError('LOCKSTEP_ERR_TXN_TOKEN_EXPIRED', 'token expired');
    }
    if (
      (revocations.sub.size > 0 && revocations.sub.has(entry.claims.sub)) ||
      (revocations.txn.size > 0 && revocations.txn.has(entry.claims.txn))
    ) {
      throw new GuardError('LOCKSTEP_ERR_TXN_TOKEN_REVOKED', 'subject or transaction revoked');
    }
    return entry;
  }

  async function verifyCold(token: string): Promise<VerifiedTxnToken> {
    if (token.length > options.maxTokenBytes) {
      throw new GuardError(
        'LOCKSTEP_ERR_TXN_TOKEN_MALFORMED',
        `token is ${token.length} bytes; the limit is ${options.maxTokenBytes}`,
      );
    }
    const parts = token.split('.');
    if (parts.length !== 3)
      throw new GuardError(
        'LOCKSTEP_ERR_TXN_TOKEN_MALFORMED',
        `expected a compact JWS (3 parts), got ${parts.length} parts`,
      );
    if (!COMPACT_JWS.test(token))
      throw new GuardError('LOCKSTEP_ERR_TXN_TOKEN_MALFORMED', 'token is not base64url compact JWS');
    if (parts[2] === '') throw new GuardError('LOCKSTEP_ERR_TXN_TOKEN_INVALID', 'token has no signature');

    const header = parseTokenJson(Buffer.from(parts[0] as string, 'base64url').toString('utf8'), 'header');
    for (const name of Object.keys(header)) {
      if (!ALLOWED_HEADER_PARAMETERS.has(name)) {
        throw new GuardError(
          'LOCKSTEP_ERR_TXN_TOKEN_INVALID',
          `header parameter "${name.slice(0, 32)}" is not accepted`,
        );
      }
    }
    if (header.alg !== 'ES256')
      throw new GuardError(
        'LOCKSTEP_ERR_TXN_TOKEN_INVALID',
        `alg ${JSON.stringify(header.alg)} is not accepted; only ES256`,
      );
    if (typeof header.typ !== 'string' || header.typ.toLowerCase() !== TXN_TOKEN_TYP) {
      throw new GuardError(
        'LOCKSTEP_ERR_TXN_TOKEN_CLAIMS',
        `typ ${JSON.stringify(header.typ)} is not ${TXN_TOKEN_TYP}: not a Txn-Token`,
      );
    }
    const kid = header.kid;
    if (typeof kid !== 'string' || !KID.test(kid))
      throw new GuardError('LOCKSTEP_ERR_TXN_TOKEN_INVALID', 'kid missing or not a plain key id');
    if (revocations.kid.has(kid))
      throw new GuardError('LOCKSTEP_ERR_TXN_TOKEN_REVOKED', `signing key ${kid} is revoked`);
    let key = options.keys.get(kid);
    if (key === undefined) {
      await options.keys.refresh();
      key = options.keys.get(kid);
      if (key === undefined) throw new GuardError('LOCKSTEP_ERR_TXN_TOKEN_INVALID', `unknown kid ${kid}`);
    }

    let payloadBytes: Uint8Array;
    verified++;
    try {
      ({ payload: payloadBytes } = await compactVerify(token, key, { algorithms: ['ES256'] }));
    } catch (error) {
      if (error instanceof joseErrors.JWSSignatureVerificationFailed)
        throw new GuardError('LOCKSTEP_ERR_TXN_TOKEN_INVALID', 'signature does not verify');
      throw new GuardError('LOCKSTEP_ERR_TXN_TOKEN_INVALID', `JWS rejected: ${(error as Error).message}`);
    }
    // A revocation may have landed while we were verifying.
    if (revocations.kid.has(kid))
      throw new GuardError('LOCKSTEP_ERR_TXN_TOKEN_REVOKED', `signing key ${kid} is revoked`);

    const claims = checkTxnClaims(parseTokenJson(new TextDecoder().decode(payloadBytes), 'claims'), {
      trustDomain: options.trustDomain,
      nowSeconds: now() / 1000,
      clockSkewSeconds: options.clockSkewSeconds,
      maxLifetimeSeconds: options.maxLifetimeSeconds,
    });
    const entry: VerifiedTxnToken = Object.freeze({
      token,
      claims,
      kid,
      expiresAtMs: claims.exp * 1000,
      roles: claims.tctx?.roles ?? NO_ROLES,
      // Well-formed by now (RFC 6749 §3.3): single spaces between non-empty tokens.
      scope: Object.freeze(claims.scope.split(' ')),
      tenant: claims.tctx?.tenant,
      requester: claims.req_wl_chain?.[0] ?? claims.req_wl,
      lastDecision: { action: null, spiffeId: null, answer: null },
    });
    checkLive(entry);
    cache.set(cacheKey(token), entry);
    return entry;
  }

  return {
    verify(header, rawHeaders) {
      if (header === undefined || header === '') throw new GuardError('LOCKSTEP_ERR_TXN_TOKEN_MISSING');
      if (typeof header !== 'string' || header.includes(',')) {
        throw new GuardError(
          countHeader(rawHeaders, 'txn-token') > 1
            ? 'LOCKSTEP_ERR_TXN_TOKEN_DUPLICATE'
            : 'LOCKSTEP_ERR_TXN_TOKEN_MALFORMED',
        );
      }
      const hit = cache.get(cacheKey(header));
      if (hit !== undefined && hit.token === header) {
        hits++;
        return checkLive(hit);
      }
      return verifyCold(header);
    },
    stats: () => ({ hits, verified, size: cache.size, bytes: cache.bytes }),
  };
}

function countHeader(rawHeaders: readonly string[], name: string): number {
  let count = 0;
  for (let i = 0; i < rawHeaders.length; i += 2) if (rawHeaders[i]?.toLowerCase() === name) count++;
  return count;
}
