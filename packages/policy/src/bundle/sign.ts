import { CompactSign } from 'jose';
import type { CryptoKey, KeyObject } from 'jose';
import { BUNDLE_ALG, BUNDLE_TYP } from '../lib/bundle-payload.ts';
import type { BundlePayload } from '../lib/bundle-payload.ts';
import type { PolicySet } from '../policy-set.ts';
import { sliceFor } from '../slice.ts';

export type SignBundleOptions = {
  /** ECDSA P-256 private key. */
  readonly privateKey: CryptoKey | KeyObject;
  /** Key id published with the public key in the control plane's JWKS. */
  readonly kid: string;
  /** Sign the slice of `set` for this service instead of the whole set. */
  readonly service?: string;
  /** Issue time; defaults to now. */
  readonly issuedAt?: Date;
};

/**
 * Signs a policy set as a compact JWS (ES256, `typ: lockstep-policy+jws`, `kid`) whose payload is
 * `{ v: 1, version, service, schema, policies, iat }`.
 */
export async function signBundle(set: PolicySet, options: SignBundleOptions): Promise<string> {
  if (typeof options?.kid !== 'string' || options.kid === '')
    throw new TypeError('options.kid must be a non-empty string');
  const content =
    options.service === undefined || options.service === set.service ? set : sliceFor(set, options.service);
  const issuedAt = options.issuedAt ?? new Date();
  const payload: BundlePayload = {
    v: 1,
    version: content.version,
    service: content.service,
    schema: content.schemaText,
    policies: content.policies,
    iat: Math.floor(issuedAt.getTime() / 1000),
  };
  return new CompactSign(new TextEncoder().encode(JSON.stringify(payload)))
    .setProtectedHeader({ alg: BUNDLE_ALG, typ: BUNDLE_TYP, kid: options.kid })
    .sign(options.privateKey);
}
