/**
 * One-time join tokens: how a new workload gets its first SVID. A token is bound to one service,
 * expires (15 minutes by default), works once, and is stored only as a hash. It carries the hash of
 * the trust bundle, so that the workload's very first TLS connection to the control plane is pinned
 * to the right CA — no trust on first use.
 *
 *   ljt1.<trust bundle SHA-256, base64url>.<32 random bytes, base64url>
 *
 * The format is read by the workload too: `readJoinToken` of @lockstep/workload.
 */
import { createHash, randomBytes } from 'node:crypto';
import { readJoinToken } from '@lockstep/workload';
import { ControlPlaneError } from '../errors.ts';
import type { ControlPlaneStore, JoinTokenRecord } from '../store/store.ts';
import { isServiceName } from './issue-svid.ts';

const DEFAULT_TTL_SECONDS = 15 * 60;
const MAX_TTL_SECONDS = 7 * 24 * 3600;

export interface CreateJoinTokenRequest {
  readonly service: string;
  readonly ttlSeconds?: number;
  /** The admin's SPIFFE ID, or `cli` for a local bootstrap: recorded with the token. */
  readonly createdBy: string;
}

export interface CreatedJoinToken {
  /** Shown once; only its hash is kept. */
  readonly token: string;
  readonly service: string;
  readonly expiresAt: Date;
}

export interface JoinTokenIssuer {
  readonly trustDomain: string;
  readonly bundleHash: string;
  readonly now: () => number;
}

export async function createJoinToken(
  store: ControlPlaneStore,
  issuer: JoinTokenIssuer,
  request: CreateJoinTokenRequest,
): Promise<CreatedJoinToken> {
  if (!isServiceName(request.service))
    throw new TypeError(
      `service must be a lower-case DNS label such as "orders"; got ${JSON.stringify(request.service)}`,
    );
  const ttlSeconds = request.ttlSeconds ?? DEFAULT_TTL_SECONDS;
  if (!Number.isInteger(ttlSeconds) || ttlSeconds < 1 || ttlSeconds > MAX_TTL_SECONDS) {
    throw new TypeError(`ttlSeconds must be a whole number of seconds from 1 to ${MAX_TTL_SECONDS}; got ${ttlSeconds}`);
  }
  const secret = randomBytes(32).toString('base64url');
  const now = issuer.now();
  const expiresAt = now + ttlSeconds * 1000;
  await store.createJoinToken({
    tokenHash: hashSecret(secret),
    service: request.service,
    bundleHash: issuer.bundleHash,
    createdAt: now,
    expiresAt,
    createdBy: request.createdBy,
  });
  return { token: `ljt1.${issuer.bundleHash}.${secret}`, service: request.service, expiresAt: new Date(expiresAt) };
}

/** The trust bundle hash a token pins; the workload checks the control plane's CA against it. */
export function pinnedBundleHash(token: string): string {
  const parts = readJoinToken(token);
  if (parts === null)
    throw new ControlPlaneError(
      'LOCKSTEP_CP_JOIN_TOKEN_INVALID',
      'not a Lockstep join token (ljt1.<bundle hash>.<secret>)',
    );
  return parts.bundleHash;
}

/**
 * Spends the token for `service`. A token for another service is refused and stays spent: whoever
 * holds it tried to become a workload it was not issued for.
 */
export async function redeemJoinToken(
  store: ControlPlaneStore,
  issuer: JoinTokenIssuer,
  token: string,
  service: string,
): Promise<JoinTokenRecord> {
  const parts = readJoinToken(token);
  if (parts === null)
    throw new ControlPlaneError(
      'LOCKSTEP_CP_JOIN_TOKEN_INVALID',
      'not a Lockstep join token (ljt1.<bundle hash>.<secret>)',
    );
  if (parts.bundleHash !== issuer.bundleHash)
    throw new ControlPlaneError('LOCKSTEP_CP_JOIN_TOKEN_INVALID', 'the token pins another trust bundle');
  const outcome = await store.redeemJoinToken(hashSecret(parts.secret), issuer.now());
  if (!outcome.ok) {
    if (outcome.reason === 'used') throw new ControlPlaneError('LOCKSTEP_CP_JOIN_TOKEN_USED');
    if (outcome.reason === 'expired') throw new ControlPlaneError('LOCKSTEP_CP_JOIN_TOKEN_EXPIRED');
    throw new ControlPlaneError('LOCKSTEP_CP_JOIN_TOKEN_INVALID');
  }
  if (outcome.record.service !== service) {
    throw new ControlPlaneError(
      'LOCKSTEP_CP_JOIN_TOKEN_WRONG_SERVICE',
      `the token is for ${outcome.record.service}, not ${service}`,
    );
  }
  return outcome.record;
}

function hashSecret(secret: string): string {
  return createHash('sha256').update(secret).digest('hex');
}
