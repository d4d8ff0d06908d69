/**
 * Sign-in throttling, after OWASP's Authentication cheat sheet (account lockout) and Credential
 * Stuffing Prevention cheat sheet. Counts live in the store, so every replica sees them; an attempt
 * is reserved under all of its counts in one atomic step (`reserveLoginAttempt`, all or nothing),
 * so that no number of parallel attempts gets more password checks than the limits allow.
 *
 *   account   failures of one account from anywhere: after `accountFreeAttempts` (5) it is locked
 *             for 1 s, doubling with every further failure up to 15 min (brute force, also from
 *             many addresses). A success (not from a known browser) clears it.
 *   network   an IPv4 address or an IPv6 /64 counts the accounts that failed from it and have not
 *             signed in from it since. Past `addressFreeAccounts` (20) it is spraying, and an
 *             account that failed from it may be tried from it once per `addressLockMs` (30 s).
 *             The network never holds a first attempt at an account: the right password of a
 *             colleague behind the same NAT or proxy gets in while a spray goes on, unless their
 *             own account is the one attacked; the most the network costs them is `addressLockMs`
 *             after each of their own typos. (Why the network does not do more: README, "Sign-in
 *             throttling".)
 *   browser   a browser that signed in to the account before (a signed device cookie) is neither
 *             held by the network nor by the account's lock: it has a count of its own (OWASP's
 *             "device cookies"), so a user keeps signing in from their own browser while their
 *             account is under attack.
 *
 * Every attempt is counted as a failure before its password is checked, and a right password takes
 * it back: a lock is never decided on a count that parallel attempts have not yet added to. A held
 * attempt writes nothing: it checks no password, extends no lock and adds no row, so a stranger
 * can neither lengthen a lock nor grow the table without paying for a password check. Unknown user
 * names are counted like real ones: a lock tells nothing about existence.
 */
import { isIPv4 } from 'node:net';
import { lockFor } from '../store/login-lock.ts';
import type { ControlPlaneStore, LoginFailures, LoginLimits } from '../store/store.ts';
import { USERNAME } from './users.ts';

export interface LockoutPolicy {
  /** Failures an account may have, from anywhere, before it is locked. */
  readonly accountFreeAttempts: number;
  /** Accounts that may fail from one network (and not sign in since) before it counts as spraying. */
  readonly addressFreeAccounts: number;
  /** From a spraying network: the wait between attempts at an account that failed from it. */
  readonly addressLockMs: number;
  readonly baseLockMs: number;
  readonly maxLockMs: number;
  /** A count with no new failure for this long starts again. */
  readonly windowMs: number;
}

export const DEFAULT_LOCKOUT: LockoutPolicy = {
  accountFreeAttempts: 5,
  addressFreeAccounts: 20,
  addressLockMs: 30_000,
  baseLockMs: 1_000,
  maxLockMs: 15 * 60_000,
  windowMs: 24 * 3_600_000,
};

/** Whose count holds an attempt back: the account's, the network's, or the known browser's own. */
export type LockedBy = 'account' | 'address' | 'browser';

export type Admission =
  | {
      readonly admitted: true;
      /** How long the next attempt is held when this one turns out wrong, and by whose count. */
      readonly lockIfWrongMs: number;
      readonly lockIfWrongBy: LockedBy;
      /** The password was right: takes this attempt and the account's earlier failures back. */
      succeeded(): Promise<void>;
    }
  | { readonly admitted: false; readonly by: LockedBy; readonly retryAfterMs: number };

export interface Lockout {
  /**
   * Reserves one password check for `username` from `address`: counted as a failure from now on.
   * `knownBrowser`: an id of the browser's verified device cookie for this account, or null.
   */
  admit(attempt: { username: string; address: string; knownBrowser: string | null }, now: number): Promise<Admission>;
}

/**
 * The network an address stands for: an IPv4 address itself (an IPv4-mapped IPv6 one too), an IPv6
 * address's /64, which one subscriber usually holds whole.
 */
export function networkOf(address: string): string {
  const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(address);
  if (mapped !== null) return mapped[1] as string;
  if (isIPv4(address) || !address.includes(':')) return address;
  const [head = '', tail = ''] = (address.toLowerCase().split('%', 1)[0] ?? '').split('::');
  const left = head === '' ? [] : head.split(':');
  const right = tail === '' ? [] : tail.split(':');
  const groups = address.includes('::')
    ? [...left, ...Array<string>(8 - left.length - right.length).fill('0'), ...right]
    : left;
  return `${groups
    .slice(0, 4)
    .map((group) => group.replace(/^0+(?=.)/, ''))
    .join(':')}::/64`;
}

export function createLockout(store: ControlPlaneStore, policy: LockoutPolicy = DEFAULT_LOCKOUT): Lockout {
  const { windowMs } = policy;
  const accountLimits: LoginLimits = {
    freeAttempts: policy.accountFreeAttempts,
    baseLockMs: policy.baseLockMs,
    maxLockMs: policy.maxLockMs,
    windowMs,
  };
  // From a spraying network: one free attempt at each account, then one per addressLockMs.
  const sprayedLimits: LoginLimits = {
    freeAttempts: 1,
    baseLockMs: policy.addressLockMs,
    maxLockMs: policy.addressLockMs,
    windowMs,
  };
  // From any other network the account's failures from it are counted, and hold nothing.
  const countedOnly: LoginLimits = { ...sprayedLimits, freeAttempts: Number.POSITIVE_INFINITY };
  const refused = (by: LockedBy, until: number, now: number): Admission => ({
    admitted: false,
    by,
    // At least a second: a lock that ended while we looked is retried, not reported as 0 s.
    retryAfterMs: Math.max(until - now, 1_000),
  });

  return {
    async admit({ username, address, knownBrowser }, now) {
      // Names that no account can have share one count: junk cannot fill the table.
      const name = USERNAME.test(username) ? username : '(not a user name)';
      if (knownBrowser !== null) {
        const browserKey = `browser:${name} ${knownBrowser}`;
        const browser = await store.reserveLoginAttempt([{ key: browserKey, limits: accountLimits }], now);
        if (!browser.reserved) return refused('browser', browser.lockedUntil, now);
        return {
          admitted: true,
          lockIfWrongMs: lockFor((browser.counts[0] as LoginFailures).failures, accountLimits),
          lockIfWrongBy: 'browser',
          // Only its own count: the account's is the strangers', and a lock on them stays.
          succeeded: async () => {
            await store.clearLoginFailures(browserKey);
          },
        };
      }

      const network = networkOf(address);
      const keys = {
        account: `account:${name}`,
        address: `address:${network}`,
        pair: `address-account:${network} ${name}`,
      };
      // Read only, before anything is written: the network's count decides how its attempts count.
      const failedAccounts = await store.loginFailures(keys.address);
      const spraying =
        failedAccounts !== null &&
        failedAccounts.lastFailureAt >= now - windowMs &&
        failedAccounts.failures >= policy.addressFreeAccounts;
      const pairLimits = spraying ? sprayedLimits : countedOnly;
      const claims = [
        { key: keys.account, limits: accountLimits },
        { key: keys.pair, limits: pairLimits },
      ];
      const reservation = await store.reserveLoginAttempt(claims, now);
      if (!reservation.reserved)
        return refused(reservation.lockedClaim === 0 ? 'account' : 'address', reservation.lockedUntil, now);
      const [account, pair] = reservation.counts as [LoginFailures, LoginFailures];
      // The network counts an account once, at its first failure from there.
      if (pair.failures === 1) await store.addLoginFailure(keys.address, now, windowMs);
      const byAccount = lockFor(account.failures, accountLimits);
      const byAddress = lockFor(pair.failures, pairLimits);
      return {
        admitted: true,
        lockIfWrongMs: Math.max(byAccount, byAddress),
        lockIfWrongBy: byAddress > byAccount ? 'address' : 'account',
        async succeeded() {
          // The account's failures from this network were mistakes of its user, not an attack: the
          // network's count takes the account back (once, however many parallel successes).
          const [, hadPair] = await Promise.all([
            store.clearLoginFailures(keys.account),
            store.clearLoginFailures(keys.pair),
          ]);
          if (hadPair) await store.forgiveLoginFailure(keys.address);
        },
      };
    },
  };
}
