/**
 * A bound on the sign-in checks one replica has in progress, taken before the lockout counts
 * anything and before any password is hashed.
 *
 * The lockout never holds a first attempt at an account (lockout.ts), so without this bound every
 * new name a client tries costs a full scrypt check (~0.3 s of a thread and 128 MiB): they run in
 * libuv's thread pool (4 threads unless UV_THREADPOOL_SIZE says otherwise) and whatever does not fit
 * waits there, unbounded. A burst of 20,000 made-up names from one address wrote ~40,000 rows and
 * queued ~25 min of hashing ahead of everyone's sign-in. With the bound:
 *
 *   perNetwork  checks from one network (an IPv4 address, an IPv6 /64: `networkOf`, as the lockout
 *               counts it) in progress at once (2)
 *   total       checks in progress or waiting for a thread, from all networks together (8: twice
 *               the default thread pool, so an admitted check waits for at most about one other)
 *
 * An attempt over either is answered at once ("try again in a moment", 429), before anything else:
 * no count, no row, no hash; the user name is not looked at, so known and unknown names are alike.
 * The slots live in this process's memory, not the store: taking one writes nothing, and each
 * replica bounds its own CPU (N replicas allow N times `perNetwork` from one network together).
 * The cost: whoever keeps a network's slots busy makes the other users of that address retry.
 */
import { networkOf } from './lockout.ts';

export interface PasswordCheckLimits {
  /** Sign-in checks from one network (IPv4 address, IPv6 /64) in progress at once, on this replica. */
  readonly perNetwork: number;
  /** Sign-in checks in progress (hashing or waiting for a thread) at once on this replica, from all networks. */
  readonly total: number;
}

export const DEFAULT_PASSWORD_CHECKS: PasswordCheckLimits = { perNetwork: 2, total: 8 };

/** Which bound refused a slot: the client's network's, or the replica's as a whole. */
export type BusyWith = 'network' | 'replica';

export type CheckSlot = { readonly taken: true; release(): void } | { readonly taken: false; readonly by: BusyWith };

export interface CheckSlots {
  /** A slot for one sign-in check from `address`; `release()` gives it back (once, however often called). */
  take(address: string): CheckSlot;
}

export function createCheckSlots(limits: PasswordCheckLimits = DEFAULT_PASSWORD_CHECKS): CheckSlots {
  for (const field of ['perNetwork', 'total'] as const) {
    const value = limits[field];
    if (!Number.isSafeInteger(value) || value < 1) {
      throw new TypeError(
        `passwordChecks.${field} must be a whole number of 1 or more, ` +
          `e.g. ${DEFAULT_PASSWORD_CHECKS[field]}; got ${String(value)}`,
      );
    }
  }
  if (limits.perNetwork > limits.total) {
    throw new TypeError(
      `passwordChecks.perNetwork (${limits.perNetwork}) cannot exceed passwordChecks.total ` +
        `(${limits.total}): raise total or lower perNetwork`,
    );
  }
  // Only networks with a check in progress: at most `total` entries, however many addresses come.
  const inProgress = new Map<string, number>();
  let total = 0;

  return {
    take(address) {
      const network = networkOf(address);
      const ours = inProgress.get(network) ?? 0;
      if (ours >= limits.perNetwork) return { taken: false, by: 'network' };
      if (total >= limits.total) return { taken: false, by: 'replica' };
      inProgress.set(network, ours + 1);
      total += 1;
      let released = false;
      return {
        taken: true,
        release() {
          if (released) return;
          released = true;
          total -= 1;
          const left = (inProgress.get(network) ?? 1) - 1;
          if (left === 0) inProgress.delete(network);
          else inProgress.set(network, left);
        },
      };
    },
  };
}
