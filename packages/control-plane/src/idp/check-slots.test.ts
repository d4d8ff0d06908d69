import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { createCheckSlots, type CheckSlot } from './check-slots.ts';

const busy = (slot: CheckSlot) => (slot.taken ? null : slot.by);

describe('sign-in check slots', () => {
  it('gives a network at most perNetwork slots at once, an IPv6 /64 counting as one network; other networks are not affected', () => {
    const slots = createCheckSlots({ perNetwork: 2, total: 8 });
    const taken = [slots.take('2001:db8:0:12::1'), slots.take('2001:db8:0:12:ffff::2')];
    assert.ok(taken.every((slot) => slot.taken));
    assert.equal(busy(slots.take('2001:db8:0:12::3')), 'network', 'the same /64');
    assert.equal(busy(slots.take('2001:db8:0:13::1')), null, 'the next /64 is another network');
    assert.equal(busy(slots.take('::ffff:203.0.113.7')), null);
    assert.equal(busy(slots.take('203.0.113.7')), null, 'an IPv4-mapped address is its IPv4 one');
    assert.equal(busy(slots.take('203.0.113.7')), 'network');
  });

  it('gives all networks together at most total slots; a slot given back is free again, once however often released', () => {
    const slots = createCheckSlots({ perNetwork: 2, total: 3 });
    const taken = ['10.0.0.1', '10.0.0.2', '10.0.0.3'].map((address) => slots.take(address));
    assert.equal(busy(slots.take('10.0.0.4')), 'replica');
    const first = taken[0] as CheckSlot;
    assert.ok(first.taken);
    first.release();
    first.release();
    assert.equal(busy(slots.take('10.0.0.4')), null, 'the released slot is free');
    assert.equal(busy(slots.take('10.0.0.5')), 'replica', 'and a second release freed nothing more');
  });

  it('refuses limits that cannot work, saying what to write', () => {
    assert.throws(
      () => createCheckSlots({ perNetwork: 0, total: 8 }),
      /passwordChecks\.perNetwork must be a whole number of 1 or more, e\.g\. 2; got 0/,
    );
    assert.throws(
      () => createCheckSlots({ perNetwork: 2, total: 1.5 }),
      /passwordChecks\.total must be a whole number/,
    );
    assert.throws(() => createCheckSlots({ perNetwork: 4, total: 2 }), /cannot exceed passwordChecks\.total/);
  });
});
