/**
 * The gateway's session store stays within its bounds: one user's sessions beyond `perUser` sign out
 * that user's least recently used one, all sessions beyond `total` the least recently used of anyone's;
 * a session idle or old past its limit is gone; asking whether a session exists does not keep it alive.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { SessionStore, type Session } from '../services/session-store.ts';

const LIMITS = { perUser: 2, total: 4, idleMs: 1_000, maxMs: 10_000 };

function session(id: string, sub: string, at = 0): Session {
  return {
    id,
    sub,
    csrf: `csrf-${id}`,
    createdAt: at,
    lastSeen: at,
    accessToken: 'at',
    refreshToken: undefined,
    expiresAt: at + 600_000,
  };
}

describe('SessionStore', () => {
  it("keeps at most `perUser` sessions of one user: a new one signs out that user's least recently used", () => {
    const store = new SessionStore(LIMITS);
    assert.deepEqual(store.add(session('a1', 'alice')), []);
    assert.deepEqual(store.add(session('a2', 'alice')), []);
    assert.deepEqual(store.add(session('b1', 'bob')), []);
    // a1 is used again: a2 is now alice's least recently used.
    assert.equal(store.use('a1', 10)?.id, 'a1');
    assert.deepEqual(
      store.add(session('a3', 'alice', 20)).map((ended) => ended.id),
      ['a2'],
    );
    assert.equal(store.use('a2', 30), null);
    assert.deepEqual(
      ['a1', 'a3', 'b1'].map((id) => store.has(id)),
      [true, true, true],
      "not bob's",
    );
    assert.equal(store.size, 3);
  });

  it("keeps at most `total` sessions: a new one signs out the least recently used of anyone's", () => {
    const store = new SessionStore(LIMITS);
    for (const [id, sub] of [
      ['a1', 'alice'],
      ['b1', 'bob'],
      ['c1', 'carol'],
      ['d1', 'dave'],
    ] as const) {
      store.add(session(id, sub));
    }
    store.use('a1', 5);
    assert.deepEqual(
      store.add(session('e1', 'erin', 6)).map((ended) => ended.id),
      ['b1'],
    );
    assert.equal(store.size, 4);
    assert.equal(store.has('b1'), false);
    // And the one signed out no longer counts for its user: bob may have two again.
    assert.deepEqual(
      store.add(session('b2', 'bob', 7)).map((ended) => ended.id),
      ['c1'],
    );
    assert.deepEqual(
      store.add(session('b3', 'bob', 8)).map((ended) => ended.id),
      ['d1'],
    );
    assert.ok(store.has('b2') && store.has('b3'));
  });

  it('ends a session idle or old past its limit; `has` does not keep one alive, `use` does', () => {
    const store = new SessionStore(LIMITS);
    store.add(session('idle', 'alice'));
    store.add(session('busy', 'bob'));
    for (let now = 500; now <= 9_500; now += 500) {
      store.has('idle');
      assert.equal(store.use('busy', now)?.id, 'busy');
      store.sweep(now);
    }
    assert.equal(store.has('idle'), false, 'idle for more than 1 s');
    assert.equal(store.use('busy', 10_001), null, 'older than 10 s, used or not');
    assert.equal(store.size, 0);
    store.add(session('again', 'alice', 20_000));
    store.delete('again');
    assert.equal(store.use('again', 20_001), null);
  });
});
