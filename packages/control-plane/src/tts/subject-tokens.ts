/**
 * Verifying the subject token of a token exchange (draft-ietf-oauth-transaction-tokens-10 §11.2,
 * §11.3: "The TTS MUST validate the subject_token, including verifying the signature"). Accepted:
 *
 * - RFC 9068 JWT access tokens (`typ: at+jwt`) from a configured issuer (its JWKS, audience);
 * - a Txn-Token of ours, to replace it (§13.15): held to exactly what a guard accepts (the guard's
 *   header rules and its claim checks, reused), not expired (no clock tolerance: we set its `exp`),
 *   not a scanner's test token; a replacement keeps `txn`, `sub`, `tctx`, `rctx` and its chain of
 *   requesting workloads. Whether its `kid`, `sub` or `txn` is revoked the TTS asks the store;
 * - a `self_signed` JWT (§11.2.1) for internally initiated work: signed with the key of the SVID
 *   the requester presented on this mTLS connection, `iss` and `sub` both the requesting workload
 *   (Lockstep lets a job act only as itself, never as a user), `aud` the TTS (the control plane's
 *   SPIFFE ID, which the workload already verified when it connected), `iat` at most 5 min old and
 *   not in the future, `exp` not passed and at most 5 min after `iat`, and the `scope` its signer
 *   gives the work (§13.14: a subject token of unknown scope is refused, never unconstrained).
 *
 * An ID token, an unknown issuer, a forged or expired token is refused (invalid_grant).
 */
import type { KeyObject } from 'node:crypto';
import { checkTxnClaims, GuardError, parseTokenJson, type TxnTokenClaims } from '@lockstep/guard';
import { parseSpiffeId } from '@lockstep/identity';
import { controlPlaneSpiffeId } from '@lockstep/workload';
import {
  compactVerify,
  createLocalJWKSet,
  createRemoteJWKSet,
  customFetch,
  decodeJwt,
  decodeProtectedHeader,
  errors as joseErrors,
  jwtVerify,
  type JSONWebKeySet,
  type JWTPayload,
  type JWTVerifyGetKey,
} from 'jose';

export type SubjectKind = 'access_token' | 'txn_token' | 'self_signed';

export interface SubjectIssuer {
  /** The `iss` of its access tokens. */
  readonly issuer: string;
  /** Its keys: a JWKS, a function returning the current JWKS (an in-process issuer), or the JWKS URL (fetched and cached by jose). */
  readonly jwks: JSONWebKeySet | (() => JSONWebKeySet) | URL;
  /** For a JWKS URL: the fetch to use (e.g. one that trusts a private CA). */
  readonly fetch?: typeof fetch;
  /** The `aud` its access tokens must carry for us (the gateway's resource). */
  readonly audience: string;
}

/** What a replacement keeps of the Txn-Token it replaces (§13.15). */
export interface ReplacedTxnToken {
  readonly txn: string;
  readonly tctx: Readonly<Record<string, unknown>> | undefined;
  readonly rctx: Readonly<Record<string, unknown>> | undefined;
  /** Its requesting workloads, oldest first: its `req_wl_chain`, then its `req_wl`. */
  readonly requesters: readonly string[];
}

export interface VerifiedSubject {
  readonly kind: SubjectKind;
  /** The `kid` of the key that signed it (an access token or a Txn-Token): none from a revoked key. */
  readonly kid: string | undefined;
  readonly sub: string;
  readonly scope: readonly string[];
  readonly roles: readonly string[];
  readonly tenant: string | undefined;
  /** Epoch seconds; the Txn-Token never outlives it. */
  readonly exp: number | undefined;
  /** How the user authenticated, for rctx (`amr`/`acr` when the issuer says). */
  readonly authnMethod: string | undefined;
  /** Set when the subject token is a Txn-Token to replace. */
  readonly replaced?: ReplacedTxnToken;
}

/** Asymmetric algorithms an SVID key signs with (Lockstep's are P-256; SPIRE's may be RSA). */
const SVID_ALGORITHMS = ['ES256', 'ES384', 'PS256', 'RS256', 'EdDSA'];
/** A self-signed subject token is for one request: at most this old, and this long-lived. */
const SELF_SIGNED_MAX_SECONDS = 300;
const SELF_SIGNED_SHAPE =
  'sign a JWT with your SVID key carrying iss and sub = your SPIFFE ID, ' +
  "aud = the control plane's SPIFFE ID, iat, exp (at most 5 min later) and the scope of the work";

export class SubjectTokenError extends Error {
  readonly oauthError = 'invalid_grant';
  constructor(message: string) {
    super(message);
    this.name = 'SubjectTokenError';
  }
}

/** A refusal of the Txn-Token a replacement was asked for. */
const replacing = (what: string) => new SubjectTokenError(`the Txn-Token to replace ${what}`);

export interface SubjectVerifier {
  /**
   * `requester`: the SPIFFE ID of the workload asking, from its SVID; `requesterKey`: that SVID's
   * public key, which verifies a self-signed subject token.
   */
  verify(
    kind: SubjectKind,
    token: string | undefined,
    requester: string,
    requesterKey?: KeyObject,
  ): Promise<VerifiedSubject>;
  /** Trusts one more issuer's access tokens (replacing a configuration for the same `iss`). */
  addIssuer(issuer: SubjectIssuer): void;
}

/** A JWKS that changes (a rotating key ring): the key set is rebuilt only when the keys change. */
function followingKeySet(source: () => JSONWebKeySet): JWTVerifyGetKey {
  let seen: string | null = null;
  let keys: JWTVerifyGetKey | null = null;
  return (header, token) => {
    const jwks = source();
    const kids = jwks.keys.map((key) => key.kid ?? '').join(' ');
    if (keys === null || kids !== seen) {
      keys = createLocalJWKSet(jwks);
      seen = kids;
    }
    return keys(header, token);
  };
}

function keySetOf(issuer: SubjectIssuer): JWTVerifyGetKey {
  if (issuer.jwks instanceof URL)
    return createRemoteJWKSet(issuer.jwks, issuer.fetch === undefined ? {} : { [customFetch]: issuer.fetch });
  if (typeof issuer.jwks === 'function') return followingKeySet(issuer.jwks);
  return createLocalJWKSet(issuer.jwks);
}

/**
 * An external OpenID provider, configured by its issuer URL: reads its discovery document
 * (`/.well-known/openid-configuration`), checks that it names the same issuer (RFC 8414 §3.3, no
 * mix-up), and takes its `jwks_uri`. `fetch` may trust a private CA.
 */
export async function discoverIssuer(
  issuer: string,
  audience: string,
  fetchWith: typeof fetch = fetch,
): Promise<SubjectIssuer> {
  const base = new URL(issuer);
  if (base.protocol !== 'https:') throw new TypeError(`a subject-token issuer must use https; got ${issuer}`);
  const where = new URL(`${base.href.replace(/\/$/, '')}/.well-known/openid-configuration`);
  let document: { issuer?: unknown; jwks_uri?: unknown };
  try {
    const response = await fetchWith(where, {
      headers: { accept: 'application/json' },
      redirect: 'error',
      signal: AbortSignal.timeout(10_000),
    });
    if (!response.ok) throw new Error(`HTTP ${response.status}`);
    document = (await response.json()) as typeof document;
  } catch (error) {
    throw new Error(`could not read the discovery document of ${issuer} at ${where.href}: ${(error as Error).message}`);
  }
  if (document.issuer !== issuer)
    throw new Error(
      `the discovery document at ${where.href} names issuer ${JSON.stringify(document.issuer)}, not ${JSON.stringify(issuer)}: refusing it (mix-up protection)`,
    );
  if (typeof document.jwks_uri !== 'string' || !document.jwks_uri.startsWith('https://'))
    throw new Error(`the discovery document of ${issuer} has no https jwks_uri`);
  return { issuer, jwks: new URL(document.jwks_uri), audience, fetch: fetchWith };
}

export function createSubjectVerifier(options: {
  issuers: readonly SubjectIssuer[];
  txnTokenKeys: () => JSONWebKeySet;
  trustDomain: string;
  clockToleranceSeconds?: number;
}): SubjectVerifier {
  const issuers = new Map(options.issuers.map((issuer) => [issuer.issuer, { ...issuer, keys: keySetOf(issuer) }]));
  const clockTolerance = options.clockToleranceSeconds ?? 30;
  // The TTS's "unique identifier" (§11.2.1): the control plane's SPIFFE ID, which the workload
  // verifies when it connects.
  const ttsId = controlPlaneSpiffeId(options.trustDomain);

  async function accessToken(token: string): Promise<VerifiedSubject> {
    let header;
    let unverified: JWTPayload;
    try {
      header = decodeProtectedHeader(token);
      // Unverified, only to pick the issuer's keys; jwtVerify checks everything below.
      unverified = decodeJwt(token);
    } catch {
      throw new SubjectTokenError('the subject token is not a JWT');
    }
    if (typeof header.typ !== 'string' || !['at+jwt', 'application/at+jwt'].includes(header.typ.toLowerCase())) {
      throw new SubjectTokenError(
        `the subject token is not an access token (typ ${JSON.stringify(header.typ)}; an ID token is not accepted)`,
      );
    }
    const issuer = typeof unverified.iss === 'string' ? issuers.get(unverified.iss) : undefined;
    if (issuer === undefined)
      throw new SubjectTokenError(
        `unknown issuer ${JSON.stringify(unverified.iss)}: only access tokens of the configured subject issuers are exchanged`,
      );
    let payload: JWTPayload;
    try {
      ({ payload } = await jwtVerify(token, issuer.keys, {
        issuer: issuer.issuer,
        audience: issuer.audience,
        typ: header.typ,
        algorithms: ['ES256', 'RS256', 'PS256', 'EdDSA'],
        clockTolerance,
        requiredClaims: ['exp', 'sub'],
      }));
    } catch (error) {
      if (error instanceof joseErrors.JWTExpired) throw new SubjectTokenError('the subject token has expired');
      throw new SubjectTokenError(`the subject token does not verify: ${(error as Error).message}`);
    }
    return {
      kind: 'access_token',
      kid: typeof header.kid === 'string' ? header.kid : undefined,
      sub: String(payload.sub),
      scope: typeof payload.scope === 'string' ? payload.scope.split(' ').filter(Boolean) : [],
      roles: stringList(payload.roles),
      tenant: typeof payload.tenant === 'string' ? payload.tenant : undefined,
      exp: payload.exp,
      authnMethod: Array.isArray(payload.amr)
        ? payload.amr.filter((value): value is string => typeof value === 'string').join(' ')
        : typeof payload.acr === 'string'
          ? payload.acr
          : undefined,
    };
  }

  // Built once: the key set is rebuilt only when the ring's keys change (a rotation).
  const txnTokenKeys = followingKeySet(options.txnTokenKeys);

  /**
   * A Txn-Token of ours to replace, held to exactly what a guard accepts — the guard's own header
   * rules and claim checks (@lockstep/guard's checkTxnClaims), not a second reading of the draft —
   * and, beyond a guard, not expired at all (§13.15: no clock tolerance; we set its `exp`). A token
   * whose requesters include a scanner is a probe's and never leaves the scan.
   */
  async function txnToken(token: string): Promise<VerifiedSubject> {
    const kid = txnTokenKid(token);
    let payload: Uint8Array;
    try {
      ({ payload } = await compactVerify(token, txnTokenKeys, { algorithms: ['ES256'] }));
    } catch (error) {
      throw replacing(`does not verify: ${(error as Error).message}`);
    }
    const claims = claimsAGuardAccepts(payload, options.trustDomain);
    if (claims.exp <= Math.floor(Date.now() / 1000)) throw replacing('has expired');
    const requesters = [...(claims.req_wl_chain ?? []), claims.req_wl];
    const scanner = requesters.find(isScannerId);
    if (scanner !== undefined) {
      throw replacing(
        `names the scanner ${scanner} as a requester: a scan's test token is only for probing ` +
          'and is never replaced; exchange a real subject token instead',
      );
    }
    const { tctx, rctx } = claims;
    return {
      kind: 'txn_token',
      kid,
      sub: claims.sub,
      scope: claims.scope.split(' '),
      roles: [...(tctx?.roles ?? [])],
      tenant: tctx?.tenant,
      exp: claims.exp,
      authnMethod: undefined,
      replaced: { txn: claims.txn, tctx, rctx, requesters },
    };
  }

  async function selfSigned(token: string, requester: string, key: KeyObject | undefined): Promise<VerifiedSubject> {
    const refuse = (why: string) => new SubjectTokenError(`the self-signed subject token ${why}`);
    if (key === undefined) throw refuse('is verified with the key of the SVID presented on this connection; none was');
    let payload: JWTPayload;
    try {
      ({ payload } = await jwtVerify(token, key, {
        algorithms: SVID_ALGORITHMS,
        issuer: requester,
        subject: requester,
        audience: ttsId,
        clockTolerance,
        maxTokenAge: SELF_SIGNED_MAX_SECONDS,
        requiredClaims: ['iss', 'sub', 'aud', 'iat', 'exp'],
      }));
    } catch (error) {
      // §6: no Txn-Token for a presented credential whose expiration time has passed.
      if (error instanceof joseErrors.JWTExpired) throw refuse(`is stale: ${error.message}`);
      if (error instanceof joseErrors.JWTClaimValidationFailed) {
        throw refuse(`has an unacceptable ${error.claim} (${error.message}); ${SELF_SIGNED_SHAPE}`);
      }
      throw refuse(`does not verify with the key of the requester's SVID: ${(error as Error).message}`);
    }
    if (typeof payload.aud !== 'string') throw refuse(`must have aud ${ttsId} alone`);
    if ((payload.exp as number) - (payload.iat as number) > SELF_SIGNED_MAX_SECONDS) {
      throw refuse(`lives longer than ${SELF_SIGNED_MAX_SECONDS}s`);
    }
    return {
      kind: 'self_signed',
      kid: undefined,
      sub: requester,
      scope: scopeOf(payload.scope, 'the self-signed subject token'),
      roles: [],
      tenant: undefined,
      exp: payload.exp,
      authnMethod: 'workload',
    };
  }

  return {
    addIssuer(issuer) {
      issuers.set(issuer.issuer, { ...issuer, keys: keySetOf(issuer) });
    },
    async verify(kind, token, requester, requesterKey) {
      if (typeof token !== 'string' || token === '' || token.length > 16_384) {
        throw new SubjectTokenError('subject_token is missing or too long');
      }
      if (kind === 'self_signed') return selfSigned(token, requester, requesterKey);
      return kind === 'access_token' ? accessToken(token) : txnToken(token);
    },
  };
}

/** RFC 6749 §3.3: scope = scope-token *( SP scope-token ), scope-token = 1*NQCHAR. */
export const SCOPE_SYNTAX = /^[\x21\x23-\x5b\x5d-\x7e]+(?: [\x21\x23-\x5b\x5d-\x7e]+)*$/;

/** The scope a subject token carries; refused when it carries none (§13.14) or a malformed one. */
function scopeOf(value: unknown, what: string): string[] {
  if (typeof value !== 'string') {
    throw new SubjectTokenError(`${what} carries no scope: a token of unknown scope is refused, never unbounded`);
  }
  if (!SCOPE_SYNTAX.test(value)) {
    throw new SubjectTokenError(`${what} has a scope that is not space-separated scope tokens (RFC 6749 §3.3)`);
  }
  return value.split(' ');
}

function stringList(value: unknown): string[] {
  return Array.isArray(value) ? value.filter((item): item is string => typeof item === 'string') : [];
}

// What a guard takes of a Txn-Token's JOSE header (@lockstep/guard's steps/txn-token.ts, which keeps
// these checks inline in its verification): a compact JWS whose header is alg ES256, typ, a plain kid.
const COMPACT_JWS = /^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+$/;
const TXN_TOKEN_HEADER: ReadonlySet<string> = new Set(['alg', 'typ', 'kid']);
const KID = /^[A-Za-z0-9._:-]{1,128}$/;
/** A guard's defaults (@lockstep/guard option `txnToken`): a replaced token passes every guard of ours. */
const GUARD_RULES = { clockSkewSeconds: 30, maxLifetimeSeconds: 300 } as const;

/** The `kid` of a Txn-Token whose header a guard accepts (parsed as the guard parses it). */
function txnTokenKid(token: string): string {
  if (!COMPACT_JWS.test(token)) throw replacing('is not a compact JWS');
  let header: Readonly<Record<string, unknown>>;
  try {
    header = parseTokenJson(Buffer.from(token.slice(0, token.indexOf('.')), 'base64url').toString('utf8'), 'header');
  } catch (error) {
    if (error instanceof GuardError) throw replacing(`has a header a guard refuses: ${error.detail}`);
    throw error;
  }
  const extra = Object.keys(header).find((name) => !TXN_TOKEN_HEADER.has(name));
  if (extra !== undefined) {
    throw replacing(`has header parameter ${JSON.stringify(extra.slice(0, 32))}; a guard takes only alg, typ and kid`);
  }
  if (header.alg !== 'ES256') throw replacing(`has alg ${JSON.stringify(header.alg)}; a Txn-Token is ES256`);
  if (typeof header.typ !== 'string' || header.typ.toLowerCase() !== 'txntoken+jwt') {
    throw replacing(`has typ ${JSON.stringify(header.typ)}: it is not a Txn-Token (txntoken+jwt)`);
  }
  if (typeof header.kid !== 'string' || !KID.test(header.kid)) throw replacing('has no plain kid');
  return header.kid;
}

/** The verified payload, through the guard's own parser and claim checks. */
function claimsAGuardAccepts(payload: Uint8Array, trustDomain: string): TxnTokenClaims {
  try {
    const claims = parseTokenJson(new TextDecoder().decode(payload), 'claims');
    return checkTxnClaims(claims, { trustDomain, nowSeconds: Date.now() / 1000, ...GUARD_RULES });
  } catch (error) {
    if (!(error instanceof GuardError)) throw error;
    if (error.code === 'LOCKSTEP_ERR_TXN_TOKEN_EXPIRED') throw replacing('has expired');
    throw replacing(`is one a guard refuses: ${error.detail} (${error.code})`);
  }
}

/** Any identity under `/scanner/` (not only the `/scanner/<name>` a scan kit names): a probe's. */
function isScannerId(id: string): boolean {
  return parseSpiffeId(id)?.path.startsWith('/scanner/') === true;
}
