/**
 * The lock rule of sign-in throttling (idp/lockout.ts), one for both stores: a count is locked
 * after `freeAttempts` failures, for `baseLockMs` doubling with each further failure up to
 * `maxLockMs`, from its last failure; a count with no failure for `windowMs` starts again.
 */
import type { LoginClaim, LoginFailures, LoginLimits } from './store.ts';

/** How long a count of `failures` is locked after its last failure. */
export function lockFor(
  failures: number,
  limits: Pick<LoginLimits, 'freeAttempts' | 'baseLockMs' | 'maxLockMs'>,
): number {
  if (failures < limits.freeAttempts) return 0;
  return Math.min(limits.baseLockMs * 2 ** Math.min(failures - limits.freeAttempts, 30), limits.maxLockMs);
}

/** When `count` is no longer locked, or 0 when it is not locked at `now`. */
export function lockedUntil(count: LoginFailures | null, limits: LoginLimits, now: number): number {
  if (count === null || count.lastFailureAt < now - limits.windowMs) return 0;
  const until = count.lastFailureAt + lockFor(count.failures, limits);
  return until > now ? until : 0;
}

/** The first of `claims` locked at `now` (given their counts, in order) and until when; null when none is. */
export function firstLocked(
  claims: readonly LoginClaim[],
  counts: readonly (LoginFailures | null)[],
  now: number,
): { claim: number; until: number } | null {
  for (const [claim, { limits }] of claims.entries()) {
    const until = lockedUntil(counts[claim] ?? null, limits, now);
    if (until > 0) return { claim, until };
  }
  return null;
}
