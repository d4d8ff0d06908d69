import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { DecisionCache } from './decision-cache.ts';

describe('DecisionCache', () => {
  it('evicts the least recently used entry, where a get counts as a use', () => {
    const cache = new DecisionCache<number>(2);
    cache.set('a', 1);
    cache.set('b', 2);
    assert.equal(cache.get('a'), 1);
    cache.set('c', 3);
    assert.equal(cache.get('b'), undefined);
    assert.equal(cache.get('a'), 1);
    assert.equal(cache.get('c'), 3);
    assert.equal(cache.size, 2);
    cache.clear();
    assert.equal(cache.size, 0);
  });

  it('stores nothing with capacity 0', () => {
    const cache = new DecisionCache<number>(0);
    cache.set('a', 1);
    assert.equal(cache.get('a'), undefined);
  });
});
