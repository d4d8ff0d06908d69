/**
 * Test Txn-Tokens for a scanner (`lockstep scan`), issued through the admin API only. Every token
 * names the scanner as its requester (`req_wl`), so a guard never runs a handler for it; a probe
 * can only learn whether the guard would have admitted it. Besides genuine tokens for the scan's
 * test users, the kit holds a fixed set of *defective* tokens signed with the real key — each must be
 * refused by a guard for one specific reason (wrong typ, audience, lifetime…). The set is fixed, not
 * chosen by the caller: this is not a signing oracle.
 *
 * The kit also holds the scan's probe token (`typ: lockstep-probe+jwt`, bound to the scanner's key by
 * `cnf.jwk`): with a per-request proof made with that key, a guard records the scanner's transport
 * attacks — refused before any SVID is verified — as its probes (@lockstep/guard's steps/probe-proof.ts).
 * It grants nothing: a guard reads it only on a request it has already refused.
 */
import { randomUUID } from 'node:crypto';
import { CompactSign, FlattenedSign, SignJWT, base64url, type JWK, type JWTPayload } from 'jose';
import { PROBE_TOKEN_MAX_SECONDS, PROBE_TOKEN_TYP } from '@lockstep/guard';
import type { SigningKey } from '../ca/signing-key.ts';

export interface ScanUser {
  readonly sub: string;
  readonly roles: readonly string[];
  readonly tenant?: string;
}

export interface ScanTokenRequest {
  /** The scanner's SPIFFE ID (`spiffe://<td>/scanner/<name>`): every token's `req_wl`. */
  readonly scanner: string;
  readonly users: readonly ScanUser[];
  /** A subject and a transaction that are revoked (the caller revokes them before handing out the kit). */
  readonly revokedSub: string;
  readonly revokedTxn: string;
  /** The public key of the scanner's SVID (from its CSR): the probe token's `cnf.jwk`. */
  readonly scannerKey: JWK;
}

export interface ScanTokens {
  /** One genuine Txn-Token per test user, in request order. */
  readonly users: readonly string[];
  /** Signed with the real key, each defective in one way (name → token). */
  readonly defective: Readonly<Record<DefectiveToken, string>>;
  /** The scan's probe token: what the scanner's probe proofs carry. */
  readonly probe: string;
}

export type DefectiveToken =
  | 'expired'
  | 'not-yet-valid'
  | 'issued-in-future'
  | 'no-exp'
  | 'lifetime-over-max'
  | 'foreign-audience'
  | 'audience-array'
  | 'typ-access-token'
  | 'typ-plain-jwt'
  | 'typ-id-token'
  | 'nul-in-claims'
  | 'duplicate-claims'
  | 'revoked-sub'
  | 'revoked-txn'
  | 'no-txn'
  | 'crit-unknown'
  | 'b64-false'
  // draft-ietf-oauth-transaction-tokens-10 §9.2 (ids as in @lockstep/testkit's attack catalogue)
  | 'scope-missing'
  | 'req-wl-missing'
  | 'roles-string'
  | 'tctx-proto-key';

const LIFETIME_SECONDS = 300;
/**
 * The scope of every scan token: scope is REQUIRED (draft -10 §9.2) and names the purpose, here a
 * probe's. No policy grants anything for it, as it granted nothing for the empty scope before.
 */
const SCAN_SCOPE = 'lockstep:scan';

/**
 * RFC 7797 `b64: false`. The unencoded payload is itself base64url text, so the signature also
 * verifies read as an ordinary JWS: only the header says the payload is not to be decoded.
 */
async function unencodedPayload(key: SigningKey, claims: JWTPayload): Promise<string> {
  const payload = base64url.encode(JSON.stringify(claims));
  const jws = await new FlattenedSign(new TextEncoder().encode(payload))
    .setProtectedHeader({ alg: 'ES256', typ: 'txntoken+jwt', kid: key.kid, b64: false, crit: ['b64'] })
    .sign(key.privateKey);
  return `${jws.protected}.${payload}.${jws.signature}`;
}

export async function issueScanTokens(
  key: SigningKey,
  trustDomain: string,
  request: ScanTokenRequest,
  nowMs: number,
): Promise<ScanTokens> {
  const iat = Math.floor(nowMs / 1000);
  const [first] = request.users;
  const base = (sub: string, txn: string = randomUUID()): JWTPayload => ({
    sub,
    aud: trustDomain,
    iat,
    exp: iat + LIFETIME_SECONDS,
    txn,
    scope: SCAN_SCOPE,
    req_wl: request.scanner,
    tctx: { roles: [...(first?.roles ?? [])], ...(first?.tenant === undefined ? {} : { tenant: first.tenant }) },
    rctx: { authn: 'lockstep-scan' },
  });
  const sign = async (payload: JWTPayload, typ = 'txntoken+jwt') =>
    new SignJWT(payload).setProtectedHeader({ alg: 'ES256', typ, kid: key.kid }).sign(key.privateKey);
  const users = await Promise.all(
    request.users.map((user) =>
      sign({
        ...base(user.sub),
        tctx: { roles: [...user.roles], ...(user.tenant === undefined ? {} : { tenant: user.tenant }) },
      }),
    ),
  );
  const sub = first?.sub ?? 'lockstep-scan';
  const { exp: _exp, ...withoutExp } = base(sub);
  const { txn: _txn, ...withoutTxn } = base(sub);
  const { scope: _scope, ...withoutScope } = base(sub);
  const { req_wl: _requester, ...withoutRequester } = base(sub);
  // A "__proto__" member, written as bytes (JSON.stringify cannot): a naive copy of tctx inherits its roles.
  const withProto = JSON.stringify(base(sub)).replace('"tctx":{', '"tctx":{"__proto__":{"roles":["admin"]},');
  // Duplicate member names: JSON.parse keeps the last one, a careless verifier may read the first.
  const duplicated = new TextEncoder().encode(
    JSON.stringify(base(sub)).replace(/^\{/, `{"sub":"${request.revokedSub}",`),
  );
  const defective: Record<DefectiveToken, string> = {
    expired: await sign({ ...base(sub), iat: iat - 3_600, exp: iat - 600 }),
    'not-yet-valid': await sign({ ...base(sub), nbf: iat + 3_600 }),
    'issued-in-future': await sign({ ...base(sub), iat: iat + 3_600, exp: iat + 3_600 + 60 }),
    'no-exp': await sign(withoutExp),
    'lifetime-over-max': await sign({ ...base(sub), exp: iat + 86_400 }),
    'foreign-audience': await sign({ ...base(sub), aud: `other.${trustDomain}` }),
    'audience-array': await sign({ ...base(sub), aud: [trustDomain, `other.${trustDomain}`] }),
    'typ-access-token': await sign({ ...base(sub), client_id: 'lockstep-scan', scope: 'openid' }, 'at+jwt'),
    'typ-plain-jwt': await sign(base(sub), 'JWT'),
    'typ-id-token': await sign(
      { ...base(sub), aud: 'lockstep-scan', nonce: randomUUID(), azp: 'lockstep-scan' },
      'JWT',
    ),
    'nul-in-claims': await sign({ ...base(`${sub}\u0000admin`) }),
    'duplicate-claims': await new CompactSign(duplicated)
      .setProtectedHeader({ alg: 'ES256', typ: 'txntoken+jwt', kid: key.kid })
      .sign(key.privateKey),
    'revoked-sub': await sign(base(request.revokedSub)),
    'revoked-txn': await sign(base(sub, request.revokedTxn)),
    'no-txn': await sign(withoutTxn),
    // An extension the verifier does not understand, marked critical: must be refused, not ignored.
    'crit-unknown': await new CompactSign(new TextEncoder().encode(JSON.stringify(base(sub))))
      .setProtectedHeader({ alg: 'ES256', typ: 'txntoken+jwt', kid: key.kid, crit: ['exp-x'], 'exp-x': 1 })
      .sign(key.privateKey, { crit: { 'exp-x': true } }),
    'b64-false': await unencodedPayload(key, base(sub)),
    'scope-missing': await sign(withoutScope),
    'req-wl-missing': await sign(withoutRequester),
    'roles-string': await sign({ ...base(sub), tctx: { roles: 'admin' } }),
    'tctx-proto-key': await new CompactSign(new TextEncoder().encode(withProto))
      .setProtectedHeader({ alg: 'ES256', typ: 'txntoken+jwt', kid: key.kid })
      .sign(key.privateKey),
  };
  const { kty, crv, x, y } = request.scannerKey;
  const probe = await new SignJWT({ jti: randomUUID(), cnf: { jwk: { kty, crv, x, y } } })
    .setProtectedHeader({ alg: 'ES256', typ: PROBE_TOKEN_TYP, kid: key.kid })
    .setSubject(request.scanner)
    .setAudience(trustDomain)
    .setIssuedAt(iat)
    .setExpirationTime(iat + PROBE_TOKEN_MAX_SECONDS)
    .sign(key.privateKey);
  return { users, defective, probe };
}
