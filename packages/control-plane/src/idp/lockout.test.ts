import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { openSqliteStore } from '../store/sqlite-store.ts';
import { createLockout, DEFAULT_LOCKOUT, lockFor } from './lockout.ts';

describe('lockout', () => {
  it('doubles the lock with every failure past the free attempts, up to the maximum', () => {
    assert.deepEqual([4, 5, 6, 7, 8].map((failures) => lockFor(failures, 5, DEFAULT_LOCKOUT)), [0, 1_000, 2_000, 4_000, 8_000]);
    assert.equal(lockFor(500, 5, DEFAULT_LOCKOUT), DEFAULT_LOCKOUT.maxLockMs);
  });

  it('locks per account and per IP; a success clears the account only; the lock ends on its own', async () => {
    const store = openSqliteStore(':memory:');
    try {
      const lockout = createLockout(store, { ...DEFAULT_LOCKOUT, accountFreeAttempts: 2, ipFreeAttempts: 3 });
      assert.equal((await lockout.failed('alice', '10.0.0.1', 1_000)).locked, false);
      const locked = await lockout.failed('alice', '10.0.0.1', 1_000);
      assert.deepEqual(locked, { locked: true, retryAfterMs: 1_000, by: 'account' });
      assert.equal((await lockout.check('ALICE', '10.0.0.2', 1_500)).locked, true, 'names are compared without case, from any IP');
      assert.equal((await lockout.check('alice', '10.0.0.2', 2_001)).locked, false, 'the lock ends');
      assert.equal((await lockout.check('bob', '10.0.0.1', 1_500)).locked, false, 'two failures do not lock the IP');
      await lockout.failed('bob', '10.0.0.1', 1_600);
      assert.deepEqual(await lockout.check('carol', '10.0.0.1', 1_700), { locked: true, retryAfterMs: 900, by: 'ip' });
      await lockout.succeeded('alice');
      assert.equal(await store.loginFailures('account:alice'), null);
      assert.notEqual(await store.loginFailures('ip:10.0.0.1'), null, 'one right password does not excuse a spray');
    } finally {
      await store.close();
    }
  });
});
