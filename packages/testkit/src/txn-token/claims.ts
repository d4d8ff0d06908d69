import { randomUUID } from 'node:crypto';
import { workloadId } from '@lockstep/identity';

/**
 * Claims of a Transaction Token (draft-ietf-oauth-transaction-tokens-10 §9.2) as Lockstep uses them.
 * buildTxnClaims gives every REQUIRED claim (txn, sub, aud, iat, exp, scope, req_wl) by default, so a
 * minted token passes a guard unless a test asks otherwise.
 */
export interface TxnClaims {
  /** Transaction id: the correlation id of every audit event of the call chain. */
  txn: string;
  sub: string;
  /** The trust domain. A string; an array is one of the attacks. */
  aud: string | string[];
  iat: number;
  exp: number;
  /** Space-separated. */
  scope: string;
  tctx: { roles: string[]; tenant?: string };
  rctx: { req_ip: string; authn: string };
  /** SPIFFE ID of the workload that asked for the token. */
  req_wl: string;
  /** On a replacement: the `req_wl` of each token it replaces, oldest (the edge) first. */
  req_wl_chain?: string[];
  nbf?: number;
  iss?: string;
}

/** Overrides for mint(): any TxnClaims member, plus any extra claim. */
export type TxnClaimsInput = Partial<TxnClaims> & { readonly [claim: string]: unknown };

/** The draft's ceiling on Txn-Token lifetime that Lockstep enforces (DESIGN: exp ≤ 5 min). */
export const MAX_TXN_TOKEN_LIFETIME_SECONDS = 300;

export interface ClaimsOptions {
  /** exp = iat + lifetimeSeconds unless exp is given. Default 300. */
  readonly lifetimeSeconds?: number;
  /** Claims to leave out of the token (e.g. ['exp']). */
  readonly omit?: readonly string[];
}

export function buildTxnClaims(
  trustDomain: string,
  overrides: TxnClaimsInput = {},
  options: ClaimsOptions = {},
): Record<string, unknown> {
  const lifetime = options.lifetimeSeconds ?? MAX_TXN_TOKEN_LIFETIME_SECONDS;
  const iat = overrides.iat ?? Math.floor(Date.now() / 1000);
  const claims: Record<string, unknown> = {
    txn: randomUUID(),
    sub: 'alice',
    aud: trustDomain,
    iat,
    exp: iat + lifetime,
    scope: 'orders:read orders:write',
    tctx: { roles: ['customer'], tenant: 'acme' },
    rctx: { req_ip: '127.0.0.1', authn: 'urn:ietf:rfc:6749' },
    req_wl: workloadId(trustDomain, 'gateway'),
    ...overrides,
  };
  for (const claim of options.omit ?? []) delete claims[claim];
  return claims;
}
