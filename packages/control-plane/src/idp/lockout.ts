/**
 * Lockout with backoff, per account and per client IP. Failed logins are counted in the store (so
 * every replica sees them); once a key has `freeAttempts` failures, it is locked for a time that
 * doubles with every further failure, up to `maxLockMs`. A success clears the account's count (not
 * the IP's: one right password does not excuse a spray). Counts start again after `windowMs` of
 * quiet.
 *
 *   account: 5 free attempts, then 1 s, 2 s, 4 s … up to 15 min
 *   IP:      20 free attempts (a shared office NAT), then the same backoff
 *
 * While a key is locked no password is checked at all, so a locked attempt tells nothing and costs
 * nothing.
 */
import type { ControlPlaneStore } from '../store/store.ts';

export interface LockoutPolicy {
  readonly accountFreeAttempts: number;
  readonly ipFreeAttempts: number;
  readonly baseLockMs: number;
  readonly maxLockMs: number;
  readonly windowMs: number;
}

export const DEFAULT_LOCKOUT: LockoutPolicy = {
  accountFreeAttempts: 5,
  ipFreeAttempts: 20,
  baseLockMs: 1_000,
  maxLockMs: 15 * 60_000,
  windowMs: 24 * 3_600_000,
};

export interface LockState {
  readonly locked: boolean;
  /** When locked: how long until the next attempt is accepted. */
  readonly retryAfterMs: number;
  /** Which key is locked (`account` or `ip`). */
  readonly by: 'account' | 'ip' | null;
}

export interface Lockout {
  check(username: string, ip: string, now: number): Promise<LockState>;
  failed(username: string, ip: string, now: number): Promise<LockState>;
  succeeded(username: string): Promise<void>;
}

export function lockFor(failures: number, freeAttempts: number, policy: LockoutPolicy): number {
  if (failures < freeAttempts) return 0;
  return Math.min(policy.baseLockMs * 2 ** Math.min(failures - freeAttempts, 30), policy.maxLockMs);
}

export function createLockout(store: ControlPlaneStore, policy: LockoutPolicy = DEFAULT_LOCKOUT): Lockout {
  const accountKey = (username: string) => `account:${username.toLowerCase()}`;
  const ipKey = (ip: string) => `ip:${ip}`;

  function state(account: { failures: number; lastFailureAt: number } | null, address: { failures: number; lastFailureAt: number } | null, now: number): LockState {
    const until = (entry: { failures: number; lastFailureAt: number } | null, free: number) =>
      entry === null || now - entry.lastFailureAt > policy.windowMs ? 0 : entry.lastFailureAt + lockFor(entry.failures, free, policy) - now;
    const accountWait = until(account, policy.accountFreeAttempts);
    const ipWait = until(address, policy.ipFreeAttempts);
    if (accountWait <= 0 && ipWait <= 0) return { locked: false, retryAfterMs: 0, by: null };
    return accountWait >= ipWait ? { locked: true, retryAfterMs: accountWait, by: 'account' } : { locked: true, retryAfterMs: ipWait, by: 'ip' };
  }

  return {
    async check(username, ip, now) {
      const [account, address] = await Promise.all([store.loginFailures(accountKey(username)), store.loginFailures(ipKey(ip))]);
      return state(account, address, now);
    },
    async failed(username, ip, now) {
      const [account, address] = await Promise.all([
        store.addLoginFailure(accountKey(username), now, policy.windowMs),
        store.addLoginFailure(ipKey(ip), now, policy.windowMs),
      ]);
      return state(account, address, now);
    },
    async succeeded(username) {
      await store.clearLoginFailures(accountKey(username));
    },
  };
}
