/**
 * The signature of a shared policy head: the publishing replica signs, with the replicas' shared policy
 * signing key, a compact JWS (ES256, `typ: lockstep-policy-head+jws`) over
 * `{ version, seq, sources_sha256, applied_by, applied_at }`, and every replica verifies it before it
 * adopts the head. A database writer, who has no key, can then neither change a set nor make up one;
 * what it can still do (restore an older signed head) the policy service refuses by its position.
 * The `typ` keeps these apart from the policy bundles the same key signs for guards.
 */
import { createHash } from 'node:crypto';
import { CompactSign, compactVerify, decodeProtectedHeader, importJWK, type CryptoKey, type JWK } from 'jose';
import type { SigningKey } from '../ca/signing-key.ts';
import { sourcesText } from '../store/policy-sets.ts';
import type { PolicyHead, SharedPolicySet } from '../store/store.ts';

const TYP = 'lockstep-policy-head+jws';

/** What a head's signature covers, as the head's fields name it. */
export type SignedPolicyHead = Omit<PolicyHead, 'signature'>;

/** The signature of `head`, by the replicas' shared policy signing key. */
export async function signPolicyHead(head: SignedPolicyHead, key: SigningKey): Promise<string> {
  return new CompactSign(new TextEncoder().encode(JSON.stringify(claimsOf(head))))
    .setProtectedHeader({ alg: 'ES256', typ: TYP, kid: key.kid })
    .sign(key.privateKey);
}

/** Why `head` fails its signature, in words for the refusal; null when it holds. */
export type PolicyHeadVerifier = (head: PolicyHead) => Promise<string | null>;

/** Checks heads against their signatures by the policy key `publicJwk` (with its `kid`). */
export async function policyHeadVerifier(publicJwk: JWK): Promise<PolicyHeadVerifier> {
  const key = (await importJWK(publicJwk, 'ES256')) as CryptoKey;
  return async (head) => {
    if (head.signature === '') return 'it is not signed';
    let signed: unknown;
    try {
      const { payload, protectedHeader } = await compactVerify(head.signature, key, { algorithms: ['ES256'] });
      if (protectedHeader.typ !== TYP) return `its signature is no policy head's (typ ${String(protectedHeader.typ)})`;
      signed = JSON.parse(new TextDecoder().decode(payload));
    } catch (error) {
      const kid = kidOf(head.signature);
      return kid !== null && kid !== publicJwk.kid
        ? `it is signed by another policy key (${kid}, not ${String(publicJwk.kid)}: do the replicas share one ` +
            'key-encryption key?)'
        : `its signature does not verify with the policy key (${(error as Error).message})`;
    }
    const expected = claimsOf(head);
    const differing = (Object.keys(expected) as (keyof typeof expected)[]).filter(
      (claim) => (signed as Record<string, unknown> | null)?.[claim] !== expected[claim],
    );
    return differing.length === 0 ? null : `its signature is over other ${differing.join(', ')} than the stored head`;
  };
}

function claimsOf(head: SignedPolicyHead) {
  return {
    version: head.version,
    seq: head.seq,
    sources_sha256: sourcesDigest(head.sources),
    applied_by: head.appliedBy,
    applied_at: head.appliedAt,
  };
}

/** SHA-256 (hex) of the sources' canonical JSON: the text the store keeps. */
function sourcesDigest(sources: SharedPolicySet['sources']): string {
  return createHash('sha256').update(sourcesText(sources)).digest('hex');
}

/** The `kid` a compact JWS names, read without verifying (for the message only). */
function kidOf(jws: string): string | null {
  try {
    const { kid } = decodeProtectedHeader(jws);
    return typeof kid === 'string' ? kid : null;
  } catch {
    return null;
  }
}
