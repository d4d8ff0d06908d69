/**
 * `guard.revoke(…)` and the control plane's stream both land here. Found missing by the mutation run
 * (docs/mutation.md): a revocation that names nothing must be refused, not kept as a no-op.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { Revocations, type Revocation } from './revocations.ts';

describe('Revocations.add', () => {
  it('keeps each kind in its own set and tells every listener', () => {
    const revocations = new Revocations();
    const heard: Revocation[] = [];
    revocations.onRevoke((revocation) => heard.push(revocation));
    const all: Revocation[] = [
      { kind: 'sub', value: 'bob' },
      { kind: 'txn', value: 'txn-1' },
      { kind: 'spiffeId', value: 'spiffe://shop.test/svc/gateway' },
      { kind: 'kid', value: 'tts-1' },
    ];
    for (const revocation of all) revocations.add(revocation);
    assert.deepEqual(heard, all);
    for (const { kind, value } of all) assert.deepEqual([...revocations[kind]], [value], kind);
  });

  it('refuses an unknown kind and a value that is empty or not a string, and tells no listener', () => {
    const revocations = new Revocations();
    let heard = 0;
    revocations.onRevoke(() => {
      heard += 1;
    });
    for (const kind of ['user', 'add', 'constructor', 'onRevoke']) {
      assert.throws(
        () => revocations.add({ kind, value: 'x' } as unknown as Revocation),
        /^TypeError: unknown revocation kind ".*": use "sub", "txn", "spiffeId" or "kid"$/,
        kind,
      );
    }
    for (const value of ['', 7, undefined, ['bob']]) {
      assert.throws(
        () => revocations.add({ kind: 'sub', value } as unknown as Revocation),
        /^TypeError: a revocation needs a non-empty string value$/,
        String(value),
      );
    }
    assert.equal(heard, 0);
    const { sub, txn, spiffeId, kid } = revocations;
    assert.deepEqual([sub.size, txn.size, spiffeId.size, kid.size], [0, 0, 0, 0]);
  });
});

describe('Revocations.remove (a lifted revocation)', () => {
  it('takes one value of one kind back, says whether it was there, and tells no listener', () => {
    const revocations = new Revocations();
    let heard = 0;
    revocations.add({ kind: 'sub', value: 'bob' });
    revocations.add({ kind: 'txn', value: 'bob' });
    revocations.onRevoke(() => {
      heard += 1;
    });
    assert.equal(revocations.remove({ kind: 'sub', value: 'bob' }), true);
    assert.deepEqual(
      [[...revocations.sub], [...revocations.txn]],
      [[], ['bob']],
      'the same value of another kind stays revoked',
    );
    assert.equal(revocations.remove({ kind: 'sub', value: 'bob' }), false, 'nothing left to take back');
    assert.equal(heard, 0);
  });

  it('refuses what add refuses', () => {
    const revocations = new Revocations();
    assert.throws(
      () => revocations.remove({ kind: 'constructor', value: 'x' } as unknown as Revocation),
      /^TypeError: unknown revocation kind/,
    );
    assert.throws(
      () => revocations.remove({ kind: 'sub', value: '' }),
      /^TypeError: a revocation needs a non-empty string value$/,
    );
  });
});
