import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { BoundedCache } from './bounded-cache.ts';

describe('BoundedCache', () => {
  it('never holds more than its limit', () => {
    const cache = new BoundedCache<number, number>(3);
    for (let i = 0; i < 10; i++) cache.set(i, i * 10);
    assert.equal(cache.size, 3);
    assert.equal(cache.get(9), 90);
  });

  it('evicts the least recently inserted entry first; reads do not change the order', () => {
    const cache = new BoundedCache<string, number>(2);
    cache.set('a', 1);
    cache.set('b', 2);
    assert.equal(cache.get('a'), 1);
    cache.set('c', 3);
    assert.equal(cache.get('a'), undefined);
    assert.equal(cache.get('b'), 2);
    assert.equal(cache.get('c'), 3);
  });

  it('replaces the value of an existing key without evicting anything', () => {
    const cache = new BoundedCache<string, number>(2);
    cache.set('a', 1);
    cache.set('b', 2);
    cache.set('a', 10);
    assert.equal(cache.size, 2);
    assert.equal(cache.get('a'), 10);
    assert.equal(cache.get('b'), 2);
  });

  it('delete removes one entry and frees its slot', () => {
    const cache = new BoundedCache<string, number>(2);
    cache.set('a', 1);
    cache.set('b', 2);
    cache.delete('a');
    cache.set('c', 3);
    assert.equal(cache.size, 2);
    assert.equal(cache.get('b'), 2);
    assert.equal(cache.get('c'), 3);
  });

  it('purge removes exactly the entries the predicate selects and returns how many', () => {
    const cache = new BoundedCache<string, { kid: string }>(10);
    cache.set('t1', { kid: 'k1' });
    cache.set('t2', { kid: 'k2' });
    cache.set('t3', { kid: 'k1' });
    const seen: string[] = [];
    const removed = cache.purge((value, key) => {
      seen.push(key);
      return value.kid === 'k1';
    });
    assert.equal(removed, 2);
    assert.deepEqual(seen, ['t1', 't2', 't3']);
    assert.equal(cache.size, 1);
    assert.equal(cache.get('t1'), undefined);
    assert.deepEqual(cache.get('t2'), { kid: 'k2' });
    assert.equal(
      cache.purge(() => false),
      0,
    );
  });

  it('clear empties the cache', () => {
    const cache = new BoundedCache<string, number>(2);
    cache.set('a', 1);
    cache.set('b', 2);
    cache.clear();
    assert.equal(cache.size, 0);
    assert.equal(cache.get('a'), undefined);
  });

  it('refuses a limit that is not a positive integer', () => {
    for (const limit of [0, -1, 1.5, Number.NaN, Number.POSITIVE_INFINITY]) {
      assert.throws(
        () => new BoundedCache(limit),
        (error: Error) => error instanceof TypeError && /positive integer/.test(error.message),
        String(limit),
      );
    }
  });
});
