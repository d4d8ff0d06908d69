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

describe('BoundedCache in bytes', () => {
  it('never holds more than its byte budget; the oldest go first', () => {
    const cache = new BoundedCache<string, string>({ entries: 100, bytes: 1_000, bytesOf: (value) => value.length });
    for (let i = 0; i < 50; i++) cache.set(`k${i}`, 'x'.repeat(90 + (i % 20)));
    assert.ok(cache.bytes <= 1_000, `${cache.bytes} bytes`);
    assert.ok(cache.size >= 8 && cache.size <= 11, `${cache.size} entries`);
    assert.equal(cache.get('k49')?.length, 90 + (49 % 20));
    assert.equal(cache.get('k0'), undefined);
  });

  it('keeps its count right through replacements, deletions and purges', () => {
    const cache = new BoundedCache<string, string>({ entries: 10, bytes: 100, bytesOf: (value) => value.length });
    cache.set('a', 'xxxx');
    cache.set('a', 'xxxxxxxx');
    cache.set('b', 'xx');
    assert.equal(cache.bytes, 10);
    cache.delete('a');
    assert.equal(cache.bytes, 2);
    cache.purge(() => true);
    assert.equal(cache.bytes, 0);
    assert.equal(cache.size, 0);
  });

  it('holds one entry larger than its budget rather than none', () => {
    const cache = new BoundedCache<string, string>({ entries: 10, bytes: 10, bytesOf: (value) => value.length });
    cache.set('a', 'x'.repeat(50));
    assert.equal(cache.size, 1);
    cache.set('b', 'y');
    assert.deepEqual([cache.get('a'), cache.get('b')], [undefined, 'y']);
  });

  it('drops expired entries from the oldest end as new ones come', () => {
    let now = 0;
    const cache = new BoundedCache<string, { until: number }>({ entries: 100, expired: (value) => now >= value.until });
    cache.set('early', { until: 10 });
    cache.set('late', { until: 1_000 });
    now = 20;
    cache.set('new', { until: 2_000 });
    assert.deepEqual([cache.get('early'), cache.size], [undefined, 2]);
  });
});
