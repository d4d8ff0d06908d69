/**
 * The one-time join token's format, read by the control plane that redeems it and by the workload
 * that joins with it:
 *
 *   ljt1.<trust bundle SHA-256, base64url>.<32 random bytes, base64url>
 *
 * The bundle hash is what makes a workload's first connection to the control plane pinned rather
 * than trust-on-first-use: `hashTrustBundle` is computed by both sides the same way.
 */
import { createHash } from 'node:crypto';

const FORMAT = /^ljt1\.([A-Za-z0-9_-]{43})\.([A-Za-z0-9_-]{43})$/;

export interface JoinTokenParts {
  /** The SHA-256 of the trust bundle the token pins (base64url). */
  readonly bundleHash: string;
  readonly secret: string;
}

/** The parts of a join token, or null when it is not one. */
export function readJoinToken(token: unknown): JoinTokenParts | null {
  const match = typeof token === 'string' ? FORMAT.exec(token) : null;
  return match === null ? null : { bundleHash: match[1] as string, secret: match[2] as string };
}

/** SHA-256 over the DER of every certificate of the bundle, in order (base64url). */
export function hashTrustBundle(certificates: readonly Uint8Array[]): string {
  const hash = createHash('sha256');
  for (const der of certificates) hash.update(der);
  return hash.digest('base64url');
}
