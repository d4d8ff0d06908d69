import { SignJWT, calculateJwkThumbprint, exportJWK, generateKeyPair } from 'jose';
import type { CryptoKey, JSONWebKeySet, JWTHeaderParameters } from 'jose';
import { assertTrustDomain } from '../ca/spiffe-id.ts';
import { buildTxnClaims } from './claims.ts';
import type { ClaimsOptions, TxnClaimsInput } from './claims.ts';

export interface TxnTokenMinterOptions {
  /** e.g. "shop.test": the default `aud`, and the domain of the default `req_wl`. */
  readonly trustDomain: string;
  /** Default: the RFC 7638 thumbprint of the public key. */
  readonly kid?: string;
}

export interface MintOptions extends ClaimsOptions {
  /** Merged over { alg: 'ES256', typ: 'txntoken+jwt', kid }; a member set to undefined is removed. */
  readonly header?: Readonly<Record<string, unknown>>;
}

export interface TxnTokenMinter {
  readonly trustDomain: string;
  readonly kid: string;
  /** The public key set a guard trusts: one EC P-256 key with kid, alg ES256, use sig. */
  readonly jwks: JSONWebKeySet;
  readonly privateKey: CryptoKey;
  readonly publicKey: CryptoKey;
  /** The claims mint() would sign, for tests that hand-craft payload bytes. */
  claims(overrides?: TxnClaimsInput, options?: ClaimsOptions): Record<string, unknown>;
  /** A Txn-Token signed with this minter's key: valid by default, anything but by request. */
  mint(claims?: TxnClaimsInput, options?: MintOptions): Promise<string>;
}

/** A Txn-Token signer for tests, standing in for the control plane's Txn-Token Service. */
export async function createTxnTokenMinter(options: TxnTokenMinterOptions): Promise<TxnTokenMinter> {
  const { trustDomain } = options;
  assertTrustDomain(trustDomain);
  const { privateKey, publicKey } = await generateKeyPair('ES256');
  const publicJwk = await exportJWK(publicKey);
  const kid = options.kid ?? (await calculateJwkThumbprint(publicJwk));
  const jwks: JSONWebKeySet = { keys: [{ ...publicJwk, kid, alg: 'ES256', use: 'sig' }] };

  const claims = (overrides?: TxnClaimsInput, claimsOptions?: ClaimsOptions) =>
    buildTxnClaims(trustDomain, overrides, claimsOptions);

  async function mint(overrides?: TxnClaimsInput, mintOptions: MintOptions = {}): Promise<string> {
    const header: Record<string, unknown> = { alg: 'ES256', typ: 'txntoken+jwt', kid, ...mintOptions.header };
    for (const [name, value] of Object.entries(header)) if (value === undefined) delete header[name];
    return new SignJWT(claims(overrides, mintOptions))
      .setProtectedHeader(header as JWTHeaderParameters)
      .sign(privateKey);
  }

  return Object.freeze({ trustDomain, kid, jwks, privateKey, publicKey, claims, mint });
}
