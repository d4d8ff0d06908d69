/**
 * Checking one sign-in form, in this order:
 *
 *   1. a slot (check-slots.ts): this replica checks only so many passwords at once, from one
 *      network and in all; over either bound stop here, before anything is counted or hashed
 *   2. the throttle (lockout.ts): reserve the attempt, or stop here without checking any password
 *   3. the password: a full scrypt verification, for an unknown user name too (the same time and
 *      the same answer: no way to tell which names exist)
 *   4. a right password takes the attempt back, then: may this account sign in at all?
 *
 * The outcome says what happened; the identity provider turns it into the page and the event.
 */
import type { ControlPlaneStore, UserRecord } from '../store/store.ts';
import type { BusyWith, CheckSlots } from './check-slots.ts';
import type { LockedBy, Lockout } from './lockout.ts';
import { hashPassword, needsRehash, verifyAgainstNothing, verifyPassword } from './passwords.ts';
import { USERNAME } from './users.ts';

export interface SignInAttempt {
  /** As typed, trimmed and lower-cased. */
  readonly username: string;
  readonly password: string;
  /** The client's IP address. */
  readonly address: string;
  /** The browser id of a valid device cookie for this user name, or null. */
  readonly knownBrowser: string | null;
}

/** What a sign-in is checked with: one of each per identity provider. */
export interface SignInChecks {
  readonly store: ControlPlaneStore;
  readonly lockout: Lockout;
  readonly slots: CheckSlots;
}

export type SignInOutcome =
  | { readonly kind: 'busy'; readonly by: BusyWith }
  | { readonly kind: 'held'; readonly by: LockedBy; readonly retryAfterMs: number }
  | { readonly kind: 'wrong'; readonly lockedForMs: number; readonly lockedBy: LockedBy }
  | { readonly kind: 'refused'; readonly reason: AccountRefusal }
  | { readonly kind: 'signed-in'; readonly username: string };

export type AccountRefusal = 'unknown' | 'disabled' | 'revoked';

export async function checkSignIn(
  { store, lockout, slots }: SignInChecks,
  attempt: SignInAttempt,
  now: number,
): Promise<SignInOutcome> {
  const slot = slots.take(attempt.address);
  if (!slot.taken) return { kind: 'busy', by: slot.by };
  try {
    return await checkInSlot(store, lockout, attempt, now);
  } finally {
    slot.release();
  }
}

async function checkInSlot(
  store: ControlPlaneStore,
  lockout: Lockout,
  attempt: SignInAttempt,
  now: number,
): Promise<SignInOutcome> {
  const admission = await lockout.admit(attempt, now);
  if (!admission.admitted) return { kind: 'held', by: admission.by, retryAfterMs: admission.retryAfterMs };
  const { username, password } = attempt;
  const user = USERNAME.test(username) ? await store.user(username) : null;
  const matches =
    user === null || password === ''
      ? await verifyAgainstNothing(password)
      : await verifyPassword(password, user.passwordHash);
  if (!matches || user === null)
    return { kind: 'wrong', lockedForMs: admission.lockIfWrongMs, lockedBy: admission.lockIfWrongBy };
  await admission.succeeded();
  const refusal = await accountRefusal(store, user);
  if (refusal !== null) return { kind: 'refused', reason: refusal };
  if (needsRehash(user.passwordHash)) await store.setPasswordHash(username, await hashPassword(password));
  return { kind: 'signed-in', username };
}

/** Why an account may not sign in, nor keep a session it has: gone, disabled or revoked; null when it may. */
export async function accountRefusal(
  store: ControlPlaneStore,
  user: UserRecord | null,
): Promise<AccountRefusal | null> {
  if (user === null) return 'unknown';
  if (user.disabledAt !== null) return 'disabled';
  return (await store.isRevoked('sub', user.username)) ? 'revoked' : null;
}
