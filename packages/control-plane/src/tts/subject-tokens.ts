/**
 * Verifying the subject token of a token exchange. Accepted: RFC 9068 JWT access tokens (`typ:
 * at+jwt`) from a configured issuer (its JWKS, audience), and — only for workloads the policy allows
 * — a Txn-Token of ours (to replace one) or `self_signed` (internally initiated work, where the
 * requesting workload is the subject). An ID token, an unknown issuer, a forged or expired token is
 * refused.
 */
import { createLocalJWKSet, createRemoteJWKSet, customFetch, decodeJwt, decodeProtectedHeader, errors as joseErrors, jwtVerify, type JSONWebKeySet, type JWTPayload, type JWTVerifyGetKey } from 'jose';

export const TOKEN_TYPE = {
  accessToken: 'urn:ietf:params:oauth:token-type:access_token',
  txnToken: 'urn:ietf:params:oauth:token-type:txn_token',
  selfSigned: 'urn:ietf:params:oauth:token-type:self_signed',
} as const;

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

export interface VerifiedSubject {
  readonly kind: SubjectKind;
  readonly sub: string;
  readonly scope: readonly string[];
  readonly roles: readonly string[];
  readonly tenant: string | undefined;
  /** Epoch seconds; the Txn-Token never outlives it. */
  readonly exp: number | undefined;
  /** How the user authenticated, for rctx (`amr`/`acr` when the issuer says). */
  readonly authnMethod: string | undefined;
  /** A replaced Txn-Token's `txn`: the transaction keeps its id. */
  readonly txn?: string;
}

export class SubjectTokenError extends Error {
  readonly oauthError = 'invalid_grant';
  constructor(message: string) {
    super(message);
    this.name = 'SubjectTokenError';
  }
}

export interface SubjectVerifier {
  verify(kind: SubjectKind, token: string | undefined, requester: string): Promise<VerifiedSubject>;
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
  if (issuer.jwks instanceof URL) return createRemoteJWKSet(issuer.jwks, issuer.fetch === undefined ? {} : { [customFetch]: issuer.fetch });
  if (typeof issuer.jwks === 'function') return followingKeySet(issuer.jwks);
  return createLocalJWKSet(issuer.jwks);
}

/**
 * An external OpenID provider, configured by its issuer URL: reads its discovery document
 * (`/.well-known/openid-configuration`), checks that it names the same issuer (RFC 8414 §3.3, no
 * mix-up), and takes its `jwks_uri`. `fetch` may trust a private CA.
 */
export async function discoverIssuer(issuer: string, audience: string, fetchWith: typeof fetch = fetch): Promise<SubjectIssuer> {
  const base = new URL(issuer);
  if (base.protocol !== 'https:') throw new TypeError(`a subject-token issuer must use https; got ${issuer}`);
  const where = new URL(`${base.href.replace(/\/$/, '')}/.well-known/openid-configuration`);
  let document: { issuer?: unknown; jwks_uri?: unknown };
  try {
    const response = await fetchWith(where, { headers: { accept: 'application/json' }, redirect: 'error', signal: AbortSignal.timeout(10_000) });
    if (!response.ok) throw new Error(`HTTP ${response.status}`);
    document = await response.json() as typeof document;
  } catch (error) {
    throw new Error(`could not read the discovery document of ${issuer} at ${where.href}: ${(error as Error).message}`);
  }
  if (document.issuer !== issuer) throw new Error(`the discovery document at ${where.href} names issuer ${JSON.stringify(document.issuer)}, not ${JSON.stringify(issuer)}: refusing it (mix-up protection)`);
  if (typeof document.jwks_uri !== 'string' || !document.jwks_uri.startsWith('https://')) throw new Error(`the discovery document of ${issuer} has no https jwks_uri`);
  return { issuer, jwks: new URL(document.jwks_uri), audience, fetch: fetchWith };
}

export function createSubjectVerifier(options: { issuers: readonly SubjectIssuer[]; txnTokenKeys: () => JSONWebKeySet; trustDomain: string; clockToleranceSeconds?: number }): SubjectVerifier {
  const issuers = new Map(options.issuers.map((issuer) => [issuer.issuer, { ...issuer, keys: keySetOf(issuer) }]));
  const clockTolerance = options.clockToleranceSeconds ?? 30;

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
      throw new SubjectTokenError(`the subject token is not an access token (typ ${JSON.stringify(header.typ)}; an ID token is not accepted)`);
    }
    const issuer = typeof unverified.iss === 'string' ? issuers.get(unverified.iss) : undefined;
    if (issuer === undefined) throw new SubjectTokenError(`unknown issuer ${JSON.stringify(unverified.iss)}: only access tokens of the configured subject issuers are exchanged`);
    let payload: JWTPayload;
    try {
      ({ payload } = await jwtVerify(token, issuer.keys, { issuer: issuer.issuer, audience: issuer.audience, typ: header.typ, algorithms: ['ES256', 'RS256', 'PS256', 'EdDSA'], clockTolerance, requiredClaims: ['exp', 'sub'] }));
    } catch (error) {
      if (error instanceof joseErrors.JWTExpired) throw new SubjectTokenError('the subject token has expired');
      throw new SubjectTokenError(`the subject token does not verify: ${(error as Error).message}`);
    }
    return {
      kind: 'access_token',
      sub: String(payload.sub),
      scope: typeof payload.scope === 'string' ? payload.scope.split(' ').filter(Boolean) : [],
      roles: stringList(payload.roles),
      tenant: typeof payload.tenant === 'string' ? payload.tenant : undefined,
      exp: payload.exp,
      authnMethod: Array.isArray(payload.amr) ? payload.amr.filter((value): value is string => typeof value === 'string').join(' ') : (typeof payload.acr === 'string' ? payload.acr : undefined),
    };
  }

  async function txnToken(token: string): Promise<VerifiedSubject> {
    let payload: JWTPayload;
    try {
      ({ payload } = await jwtVerify(token, createLocalJWKSet(options.txnTokenKeys()), { audience: options.trustDomain, typ: 'txntoken+jwt', algorithms: ['ES256'], clockTolerance, requiredClaims: ['exp', 'sub', 'txn'] }));
    } catch (error) {
      throw new SubjectTokenError(`the Txn-Token to replace does not verify: ${(error as Error).message}`);
    }
    const tctx = (payload.tctx ?? {}) as Record<string, unknown>;
    return {
      kind: 'txn_token', sub: String(payload.sub), scope: typeof payload.scope === 'string' ? payload.scope.split(' ').filter(Boolean) : [],
      roles: stringList(tctx.roles), tenant: typeof tctx.tenant === 'string' ? tctx.tenant : undefined, exp: payload.exp, authnMethod: undefined,
      txn: String(payload.txn),
    };
  }

  return {
    addIssuer(issuer) {
      issuers.set(issuer.issuer, { ...issuer, keys: keySetOf(issuer) });
    },
    async verify(kind, token, requester) {
      if (kind === 'self_signed') return { kind, sub: requester, scope: [], roles: [], tenant: undefined, exp: undefined, authnMethod: 'workload' };
      if (typeof token !== 'string' || token === '' || token.length > 16_384) throw new SubjectTokenError('subject_token is missing or too long');
      return kind === 'access_token' ? accessToken(token) : txnToken(token);
    },
  };
}

function stringList(value: unknown): string[] {
  return Array.isArray(value) ? value.filter((item): item is string => typeof item === 'string') : [];
}
