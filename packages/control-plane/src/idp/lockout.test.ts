import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DatabaseSync } from 'node:sqlite';
import { describe, it } from 'node:test';
import { lockFor } from '../store/login-lock.ts';
import { openSqliteStore } from '../store/sqlite-store.ts';
import { createLockout, DEFAULT_LOCKOUT, networkOf, type Admission, type LockoutPolicy } from './lockout.ts';

// addressLockMs stays DEFAULT_LOCKOUT's 30 s: the clock here is the tests' own.
const POLICY: LockoutPolicy = { ...DEFAULT_LOCKOUT, accountFreeAttempts: 2, addressFreeAccounts: 3 };
const from = (username: string, address: string, knownBrowser: string | null = null) => ({
  username,
  address,
  knownBrowser,
});
const held = (admission: Admission) =>
  admission.admitted ? null : { by: admission.by, retryAfterMs: admission.retryAfterMs };

describe('lockout', () => {
  it('doubles the lock with every failure past the free attempts, up to the maximum', () => {
    const limits = { freeAttempts: 5, baseLockMs: DEFAULT_LOCKOUT.baseLockMs, maxLockMs: DEFAULT_LOCKOUT.maxLockMs };
    assert.deepEqual(
      [4, 5, 6, 7, 8].map((failures) => lockFor(failures, limits)),
      [0, 1_000, 2_000, 4_000, 8_000],
    );
    assert.equal(lockFor(500, limits), DEFAULT_LOCKOUT.maxLockMs);
  });

  it('counts an IPv6 client by its /64 and an IPv4-mapped one as IPv4', () => {
    assert.equal(networkOf('203.0.113.7'), '203.0.113.7');
    assert.equal(networkOf('::ffff:203.0.113.7'), '203.0.113.7');
    assert.equal(networkOf('2001:db8:0:12:a:b:c:d'), '2001:db8:0:12::/64');
    assert.equal(networkOf('2001:db8:0:12::1'), networkOf('2001:0db8:0000:0012:ffff::2'));
    assert.equal(networkOf('2001:db8::1'), '2001:db8:0:0::/64');
    assert.equal(networkOf('::1'), '0:0:0:0::/64');
  });

  it('locks an account from anywhere after its free attempts, counting each attempt before its check; a lock ends on its own', async () => {
    const store = openSqliteStore(':memory:');
    try {
      const lockout = createLockout(store, POLICY);
      const first = await lockout.admit(from('alice', '10.0.0.1'), 1_000);
      assert.ok(first.admitted && first.lockIfWrongMs === 0);
      assert.deepEqual(
        await store.loginFailures('account:alice'),
        { failures: 1, lastFailureAt: 1_000 },
        'counted before the password is checked',
      );
      const second = await lockout.admit(from('alice', '10.0.0.2'), 1_000);
      assert.ok(second.admitted && second.lockIfWrongMs === 1_000, 'a wrong password now locks for 1 s');
      assert.deepEqual(
        held(await lockout.admit(from('alice', '10.0.0.3'), 1_500)),
        { by: 'account', retryAfterMs: 1_000 },
        'from any address; at least a second',
      );
      assert.equal((await store.loginFailures('account:alice'))?.failures, 2, 'a held attempt counts nowhere');
      assert.equal((await lockout.admit(from('alice', '10.0.0.3'), 2_000)).admitted, true, 'the lock ends');
    } finally {
      await store.close();
    }
  });

  it("a right password takes back its attempt and the account's failures; the network forgets the account", async () => {
    const store = openSqliteStore(':memory:');
    try {
      const lockout = createLockout(store, POLICY);
      await lockout.admit(from('bob', '10.0.0.1'), 1_000);
      const right = await lockout.admit(from('bob', '10.0.0.1'), 1_000);
      assert.ok(right.admitted);
      assert.equal(
        (await store.loginFailures('address:10.0.0.1'))?.failures,
        1,
        'two failures of one account count once for its network',
      );
      await right.succeeded();
      assert.equal(await store.loginFailures('account:bob'), null);
      assert.equal((await store.loginFailures('address:10.0.0.1'))?.failures, 0, "a user's typos are not a spray");
    } finally {
      await store.close();
    }
  });

  it('from a network that failed at several accounts, holds further attempts at those accounts, never a first attempt; not other networks', async () => {
    const store = openSqliteStore(':memory:');
    try {
      const lockout = createLockout(store, POLICY);
      const spray = await Promise.all(
        ['a1', 'a2', 'a3', 'a4', 'a5'].map((name) => lockout.admit(from(name, '10.0.0.9'), 1_000)),
      );
      assert.ok(
        spray.every((admission) => admission.admitted),
        'a first attempt at an account is never held by its network',
      );
      assert.equal(
        (await store.loginFailures('address:10.0.0.9'))?.failures,
        5,
        'five accounts failed from there: it is spraying',
      );
      const later = await lockout.admit(from('a6', '10.0.0.9'), 1_100);
      assert.ok(
        later.admitted && later.lockIfWrongMs === POLICY.addressLockMs && later.lockIfWrongBy === 'address',
        'now a wrong password at a new account holds it for addressLockMs',
      );
      assert.deepEqual(
        held(await lockout.admit(from('a1', '10.0.0.9'), 1_200)),
        { by: 'address', retryAfterMs: POLICY.addressLockMs - 200 },
        'a sprayed account waits',
      );
      assert.equal((await store.loginFailures('account:a1'))?.failures, 1, 'and the held attempt counted nowhere');
      assert.equal(
        (await lockout.admit(from('a1', '10.0.0.9'), 1_000 + POLICY.addressLockMs)).admitted,
        true,
        'once per addressLockMs',
      );
      assert.equal(
        (await lockout.admit(from('a2', '10.0.0.10'), 1_200)).admitted,
        true,
        'the same account from another network is up to its own lock',
      );
      assert.equal(
        (await lockout.admit(from('a3', '10.0.0.9', 'browser-1'), 1_200)).admitted,
        true,
        'a known browser is not held by its network',
      );
    } finally {
      await store.close();
    }
  });

  it('NAT: an attacker spraying from an address without pause keeps none of its other users out, and costs one with a typo at most addressLockMs', async () => {
    const store = openSqliteStore(':memory:');
    try {
      const lockout = createLockout(store, POLICY);
      const NAT = '198.51.100.7';
      let now = 1_000_000;
      const sprayed: string[] = [];
      const nextTry = new Map<string, number>();
      const admittedAt = new Map<string, number[]>();
      // Every 250 ms (of this test's clock) a made-up name, and each of the last 200 again the moment
      // its lock ends: a spraying script that takes every chance it is given.
      const attack = async (forMs: number) => {
        for (const end = now + forMs; now < end; now += 250) {
          sprayed.push(`ghost-${sprayed.length}`);
          nextTry.set(sprayed.at(-1) as string, now);
          if (sprayed.length > 200) nextTry.delete(sprayed[sprayed.length - 201] as string);
          for (const [name, at] of nextTry) {
            if (at > now) continue;
            const admission = await lockout.admit(from(name, NAT), now);
            if (!admission.admitted) {
              nextTry.set(name, now + admission.retryAfterMs);
              continue;
            }
            nextTry.set(name, now + admission.lockIfWrongMs);
            admittedAt.set(name, [...(admittedAt.get(name) ?? []), now]);
          }
        }
      };
      await attack(60_000);

      for (let round = 0; round < 30; round += 1) {
        await attack(1_000 + Math.floor(Math.random() * 60_000));
        const carol = await lockout.admit(from('carol', NAT), now);
        assert.ok(carol.admitted, `round ${round}: carol's right password, from a new browser, is checked at once`);
        await carol.succeeded();
      }

      const typo = await lockout.admit(from('carol', NAT), now);
      assert.ok(typo.admitted && typo.lockIfWrongBy === 'address' && typo.lockIfWrongMs === POLICY.addressLockMs);
      await attack(1_000);
      const waiting = held(await lockout.admit(from('carol', NAT), now));
      assert.ok(
        waiting?.by === 'address' && waiting.retryAfterMs <= POLICY.addressLockMs,
        `after a typo she waits at most addressLockMs: ${JSON.stringify(waiting)}`,
      );
      await attack(waiting.retryAfterMs);
      const retry = await lockout.admit(from('carol', NAT), now);
      assert.ok(retry.admitted, 'then her right password is checked, however the spray goes on');
      await retry.succeeded();

      // (The first few names were tried before the address counted as spraying.)
      const spacing = sprayed.slice(POLICY.addressFreeAccounts).flatMap((name) => {
        const times = admittedAt.get(name) ?? [];
        return times.slice(1).map((at, index) => at - (times[index] as number));
      });
      assert.ok(
        spacing.length > 100 && spacing.every((gap) => gap >= POLICY.addressLockMs),
        `the attacker gets one attempt per account per addressLockMs (${spacing.length} retries, the closest ${Math.min(...spacing)} ms apart)`,
      );
      assert.equal(await store.loginFailures('account:carol'), null, 'carol has no failures left');
    } finally {
      await store.close();
    }
  });

  it('a held attempt writes nothing: a flood of them leaves every row as it was and adds none', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'lockstep-lockout-'));
    const store = openSqliteStore(join(dir, 'store.db'));
    const reader = new DatabaseSync(join(dir, 'store.db'), { readOnly: true });
    const rows = () => reader.prepare('SELECT * FROM login_failures ORDER BY key').all();
    try {
      const lockout = createLockout(store, POLICY);
      for (const name of ['a1', 'a2', 'a3']) await lockout.admit(from(name, '10.0.0.9'), 1_000);
      for (const address of ['10.0.0.1', '10.0.0.2']) await lockout.admit(from('victim', address), 1_000);
      for (let attempt = 0; attempt < 2; attempt += 1)
        await lockout.admit(from('dave', '10.0.0.3', 'browser-1'), 1_000);
      const before = rows();
      for (let index = 0; index < 2_000; index += 1) {
        const attempts = [
          from(`a${1 + (index % 3)}`, '10.0.0.9'), // held by the spraying network
          from('victim', `10.1.${index >> 8}.${index & 255}`), // held by the account's lock, from ever new addresses
          from('dave', '10.0.0.3', 'browser-1'), // held by the browser's own count
        ];
        for (const attempt of attempts) assert.equal((await lockout.admit(attempt, 1_500)).admitted, false);
      }
      assert.deepEqual(rows(), before, 'no row added, no count or time changed: no lock extended');
    } finally {
      reader.close();
      await store.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it("gives a known browser a count of its own: the account's lock does not hold it, nor does its success lift that lock", async () => {
    const store = openSqliteStore(':memory:');
    try {
      const lockout = createLockout(store, POLICY);
      for (const address of ['10.0.0.1', '10.0.0.2']) await lockout.admit(from('dave', address), 1_000);
      assert.equal((await lockout.admit(from('dave', '10.0.0.3'), 1_100)).admitted, false, 'locked for strangers');
      const own = await lockout.admit(from('dave', '10.0.0.3', 'browser-1'), 1_100);
      assert.ok(own.admitted);
      await own.succeeded();
      assert.equal(
        (await lockout.admit(from('dave', '10.0.0.4'), 1_200)).admitted,
        false,
        'still locked for strangers',
      );
      await lockout.admit(from('dave', '10.0.0.3', 'browser-1'), 1_300);
      await lockout.admit(from('dave', '10.0.0.3', 'browser-1'), 1_300);
      assert.deepEqual(
        held(await lockout.admit(from('dave', '10.0.0.3', 'browser-1'), 1_400)),
        { by: 'browser', retryAfterMs: 1_000 },
        'and the browser has its own limit',
      );
      assert.equal((await lockout.admit(from('dave', '10.0.0.3', 'browser-2'), 1_400)).admitted, true, 'per browser');
    } finally {
      await store.close();
    }
  });

  it('counts names no account can have under one key', async () => {
    const store = openSqliteStore(':memory:');
    try {
      const lockout = createLockout(store, POLICY);
      await lockout.admit(from('<script>', '10.0.0.1'), 1_000);
      await lockout.admit(from('x'.repeat(500), '10.0.0.2'), 1_000);
      assert.equal((await store.loginFailures('account:(not a user name)'))?.failures, 2);
    } finally {
      await store.close();
    }
  });
});
