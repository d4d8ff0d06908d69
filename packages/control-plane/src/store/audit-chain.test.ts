/**
 * Known answers for the audit trail's hash chain: fixed inputs, fixed hashes, computed outside this
 * code (`printf 'lockstep-audit-v1\n<source>\n<seq>\n<prev>\n<event>' | sha256sum`). A change of what
 * the hash covers, or of how, fails here, whatever the stores and `verify` make of it between them.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { auditEntryHash, GENESIS } from './audit-chain.ts';

const SOURCE = 'spiffe://shop.test/svc/orders';
const FIRST = '{"service":"orders","requestId":"r-1","decision":"allow","txn":"t-1"}';
const SECOND = '{"service":"orders","requestId":"r-2","decision":"deny","txn":null}';
const FIRST_HASH = '0371e20acd417dbff62b4fa48b1c8155f691c44e18e0dcd8ead5f7511955ddee';
const SECOND_HASH = '529e24895b53754a772b531d2d35f58f2b19a81699d3f144f7b55d8e7425f7df';

describe('the audit chain hash (v1)', () => {
  it('starts from GENESIS, 64 zeros', () => {
    assert.equal(GENESIS, '0'.repeat(64));
  });

  it('gives the known hash of a first event, chained to GENESIS', () => {
    assert.equal(auditEntryHash(SOURCE, 1, GENESIS, FIRST), FIRST_HASH);
  });

  it('gives the known hash of a second event, chained to the first', () => {
    assert.equal(auditEntryHash(SOURCE, 2, FIRST_HASH, SECOND), SECOND_HASH);
  });

  // Each input changes the hash: one that did not would be an input the chain does not protect.
  const changed: Array<[string, () => string]> = [
    ['the source', () => auditEntryHash('spiffe://shop.test/svc/payments', 2, FIRST_HASH, SECOND)],
    ['the position', () => auditEntryHash(SOURCE, 3, FIRST_HASH, SECOND)],
    ['the previous hash', () => auditEntryHash(SOURCE, 2, GENESIS, SECOND)],
    ['the event', () => auditEntryHash(SOURCE, 2, FIRST_HASH, FIRST)],
  ];
  for (const [what, hash] of changed) {
    it(`changes with ${what}`, () => {
      assert.notEqual(hash(), SECOND_HASH);
    });
  }
});
