import { createTxnTokenMinter } from '../txn-token/create-minter.ts';
import type { TxnTokenMinter } from '../txn-token/create-minter.ts';
import type { TxnClaimsInput } from '../txn-token/claims.ts';
import type { JSONWebKeySet } from 'jose';

export interface RevokedKidToken {
  /** Signed by the second key, otherwise a valid Txn-Token. */
  readonly token: string;
  /** The kid to put on the guard's revocation list. */
  readonly kid: string;
  /** The second key's public set: trust it alongside minter.jwks, then revoke `kid`. */
  readonly jwks: JSONWebKeySet;
}

const secondKeys = new WeakMap<TxnTokenMinter, Promise<TxnTokenMinter>>();

/**
 * The second signing key of a minter (same trust domain), created once per minter, so that a
 * test's trust set and the catalogue's `kid-revoked` attack agree on it.
 */
export function revokedKeyMinter(minter: TxnTokenMinter): Promise<TxnTokenMinter> {
  let second = secondKeys.get(minter);
  if (second === undefined) {
    second = createTxnTokenMinter({ trustDomain: minter.trustDomain });
    secondKeys.set(minter, second);
  }
  return second;
}

/** A token whose signature is good but whose key a guard is expected to have revoked. */
export async function revokedKidToken(minter: TxnTokenMinter, claims?: TxnClaimsInput): Promise<RevokedKidToken> {
  const second = await revokedKeyMinter(minter);
  return { token: await second.mint(claims), kid: second.kid, jwks: second.jwks };
}
