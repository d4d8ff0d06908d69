/**
 * A self-signed subject token (draft-ietf-oauth-transaction-tokens-10 §11.2.1) for work a workload
 * starts on its own: a JWT signed with the key of its SVID, which the Txn-Token Service verifies with
 * the public key of the SVID presented on the same mTLS connection. `iss` and `sub` are the workload's
 * own SPIFFE ID (a job acts only as itself, never as a user), `aud` the Txn-Token Service (the control
 * plane's SPIFFE ID).
 */
import { createPrivateKey, type KeyObject } from 'node:crypto';
import { SignJWT } from 'jose';
import { controlPlaneSpiffeId } from './protocol.ts';

/**
 * The longest the Txn-Token Service accepts (5 min): the Txn-Token never outlives its subject token, so
 * a shorter one would cut the Txn-Token short. It is bound to this SVID's key: only this workload, on
 * an mTLS connection with that key, can exchange it.
 */
const LIFETIME_SECONDS = 300;

export interface SelfSignedSubject {
  readonly trustDomain: string;
  /** The workload's SPIFFE ID: its SVID's. */
  readonly spiffeId: string;
  /** The SVID's private key (PKCS#8 PEM). */
  readonly keyPem: string;
  /** The scope of the work, space-separated. */
  readonly scope: string;
}

export async function signSelfSignedSubjectToken(subject: SelfSignedSubject): Promise<string> {
  const key = createPrivateKey(subject.keyPem);
  const iat = Math.floor(Date.now() / 1000);
  return new SignJWT({ scope: subject.scope })
    .setProtectedHeader({ alg: algorithmOf(key) })
    .setIssuer(subject.spiffeId)
    .setSubject(subject.spiffeId)
    .setAudience(controlPlaneSpiffeId(subject.trustDomain))
    .setIssuedAt(iat)
    .setExpirationTime(iat + LIFETIME_SECONDS)
    .sign(key);
}

/** The JWS algorithm of an SVID key: P-256 for the SVIDs Lockstep issues, others for SVIDs from another SPIFFE issuer. */
function algorithmOf(key: KeyObject): string {
  const curve = key.asymmetricKeyDetails?.namedCurve;
  if (key.asymmetricKeyType === 'ec' && curve === 'prime256v1') return 'ES256';
  if (key.asymmetricKeyType === 'ec' && curve === 'secp384r1') return 'ES384';
  if (key.asymmetricKeyType === 'rsa') return 'RS256';
  if (key.asymmetricKeyType === 'ed25519') return 'EdDSA';
  throw new TypeError(
    `cannot sign a self-signed subject token with a ${key.asymmetricKeyType ?? 'unknown'} ${curve ?? ''} SVID key: ` +
      'pass subjectToken, signed with an algorithm the Txn-Token Service accepts (ES256, ES384, PS256, RS256, EdDSA)',
  );
}
