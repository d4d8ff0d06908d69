import { compactVerify, createLocalJWKSet, errors } from 'jose';
import type { CompactVerifyGetKey, JSONWebKeySet } from 'jose';
import { PolicyError } from '../errors.ts';
import { buildPolicySet } from '../lib/build-policy-set.ts';
import { BUNDLE_ALG, BUNDLE_TYP, invalid, parseBundlePayload } from '../lib/bundle-payload.ts';
import type { BundlePayload } from '../lib/bundle-payload.ts';
import { indexOfByteOffset, lineAt } from '../lib/scan-cedar.ts';
import type { PolicySet } from '../policy-set.ts';
import { computePolicySetVersion } from '../version.ts';

export type VerifyBundleOptions = {
  /** The control plane's public keys, or a jose key resolver (e.g. createRemoteJWKSet). */
  readonly keys: JSONWebKeySet | CompactVerifyGetKey;
  /** Reject bundles issued longer ago than this. */
  readonly maxAgeSeconds?: number;
  /** The service this guard protects: a bundle sliced for another service is rejected. */
  readonly service?: string;
  /** "Now" for the age checks; defaults to the current time. */
  readonly currentDate?: Date;
};

const CLOCK_TOLERANCE_SECONDS = 30;

/**
 * Verifies a policy bundle and returns its PolicySet. Accepts only ES256 with
 * `typ: lockstep-policy+jws` and a `kid`; then checks the payload, recomputes the version from
 * the content, and re-validates the content strictly, so a signed but inconsistent bundle is
 * still refused.
 */
export async function verifyBundle(jws: string, options: VerifyBundleOptions): Promise<PolicySet> {
  if (typeof jws !== 'string') throw new TypeError('jws must be a compact JWS string');
  const resolveKey = keyResolver(options?.keys);
  const now = Math.floor((options.currentDate ?? new Date()).getTime() / 1000);
  const maxAge = options.maxAgeSeconds;
  if (maxAge !== undefined && !(Number.isFinite(maxAge) && maxAge >= 0)) {
    throw new TypeError('options.maxAgeSeconds must be a non-negative number of seconds');
  }

  let verified: Awaited<ReturnType<typeof compactVerify>>;
  try {
    verified = await compactVerify(
      jws,
      (header, token) => {
        // Checked before any key is looked up: the header is still unauthenticated here, but a
        // bundle that does not even claim our profile is not worth a signature check.
        if (header.typ !== BUNDLE_TYP)
          throw invalid(`header typ must be "${BUNDLE_TYP}", got ${JSON.stringify(header.typ)}`);
        if (typeof header.kid !== 'string' || header.kid === '') throw invalid('header kid is missing');
        return resolveKey(header, token);
      },
      { algorithms: [BUNDLE_ALG] },
    );
  } catch (cause) {
    if (cause instanceof PolicyError) throw cause;
    if (cause instanceof errors.JWSInvalid) throw invalid(`not a valid compact JWS (${cause.message})`, cause);
    if (cause instanceof errors.JOSEError) {
      throw new PolicyError(
        'LOCKSTEP_POLICY_BUNDLE_SIGNATURE',
        `policy bundle rejected: signature not verified (${cause.code}: ${cause.message}); only ES256 bundles signed by a key in the trusted JWKS are accepted`,
        { cause },
      );
    }
    throw cause;
  }

  const payload = parseBundlePayload(verified.payload);
  checkTime(payload, now, maxAge);
  if (options.service !== undefined && payload.service !== null && payload.service !== options.service) {
    throw invalid(
      `bundle is the slice for ${JSON.stringify(payload.service)}, this service is ${JSON.stringify(options.service)}`,
    );
  }
  const expected = computePolicySetVersion({
    schemaText: payload.schema,
    policies: payload.policies,
    service: payload.service,
  });
  if (expected !== payload.version)
    throw invalid(`version ${payload.version} does not match the bundle content (${expected})`);
  return revalidate(payload);
}

function keyResolver(keys: VerifyBundleOptions['keys'] | undefined): CompactVerifyGetKey {
  if (typeof keys === 'function') return keys;
  if (typeof keys === 'object' && keys !== null && Array.isArray(keys.keys)) return createLocalJWKSet(keys);
  throw new TypeError('options.keys must be a JSON Web Key Set ({ keys: [...] }) or a jose key resolver');
}

function checkTime(payload: BundlePayload, now: number, maxAge: number | undefined): void {
  if (payload.iat > now + CLOCK_TOLERANCE_SECONDS) {
    throw invalid(
      `issued in the future (iat ${payload.iat}, now ${now}); check the clocks of the control plane and this host`,
    );
  }
  if (maxAge !== undefined && now - payload.iat > maxAge) {
    throw new PolicyError(
      'LOCKSTEP_POLICY_BUNDLE_STALE',
      `policy bundle rejected: issued ${now - payload.iat} s ago, more than maxAgeSeconds ${maxAge}; fetch a fresh bundle from the control plane`,
    );
  }
}

function revalidate(payload: BundlePayload): PolicySet {
  let set: PolicySet;
  try {
    set = buildPolicySet({
      schema: {
        text: payload.schema,
        locate: (byteOffset) => ({
          file: 'bundle:schema',
          line: lineAt(payload.schema, indexOfByteOffset(payload.schema, byteOffset)),
        }),
      },
      policyFiles: Object.entries(payload.policies).map(([id, text]) => ({ file: `bundle:${id}`, text })),
      service: payload.service,
      allowEmpty: true,
    });
  } catch (cause) {
    if (cause instanceof PolicyError)
      throw invalid(`content does not validate (${cause.code}: ${cause.message.replaceAll('\n', ' | ')})`, cause);
    throw cause;
  }
  const ids = Object.keys(payload.policies);
  const same =
    ids.length === Object.keys(set.policies).length && ids.every((id) => set.policies[id] === payload.policies[id]);
  if (!same || set.version !== payload.version) throw invalid('policy keys do not match their @id annotations');
  return set;
}
