/**
 * Known answers for the audit trail's hash chain: fixed inputs, fixed hashes, computed outside this
 * code (v1: `printf 'lockstep-audit-v1\n<source>\n<seq>\n<prev>\n<event>' | sha256sum`; v2: the same
 * with `lockstep-audit-v2\n<JSON [source,seq,prev,stream,streamSeq,receivedAt]>\n<event>`, by Python's
 * hashlib and json.dumps with compact separators). A change of what the hash covers, or of how,
 * fails here, whatever the stores and `verify` make of it between them.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { auditEntryHash, auditEventHash, auditTxnOf, GENESIS } from './audit-chain.ts';

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

const V2_FIRST_HASH = '22a17ee3a14fd946e51a899d179d15451949cb21f9cc3fdbbd85a7d98d0f5389';
const V2_SECOND_HASH = '4ad3f4d313223d97af82b7f8e047e02ef73f75ef8f058a854a96dddfae10a85e';
const second = {
  source: SOURCE,
  seq: 2,
  prevHash: V2_FIRST_HASH,
  stream: 's-1',
  streamSeq: 2,
  receivedAt: 1765000000500,
  event: SECOND,
};

describe('the audit chain hash (v2: every stored column)', () => {
  it('gives the known hash of a first event, chained to GENESIS', () => {
    assert.equal(
      auditEventHash({
        source: SOURCE,
        seq: 1,
        prevHash: GENESIS,
        stream: 's-1',
        streamSeq: 1,
        receivedAt: 1765000000000,
        event: FIRST,
      }),
      V2_FIRST_HASH,
    );
  });

  it('gives the known hash of a second event, chained to the first', () => {
    assert.equal(auditEventHash(second), V2_SECOND_HASH);
  });

  const changes: Array<[string, Partial<typeof second>]> = [
    ['the source', { source: 'spiffe://shop.test/svc/payments' }],
    ['the position', { seq: 3 }],
    ['the previous hash', { prevHash: GENESIS }],
    ['the stream', { stream: 's-2' }],
    ['the stream position', { streamSeq: 3 }],
    ['the arrival time', { receivedAt: 1765000000501 }],
    ['the event', { event: FIRST }],
  ];
  for (const [what, change] of changes) {
    it(`changes with ${what}`, () => {
      assert.notEqual(auditEventHash({ ...second, ...change }), V2_SECOND_HASH);
    });
  }

  it('derives the txn column from the event text, so that it needs no hash of its own', () => {
    assert.equal(auditTxnOf(FIRST), 't-1');
    assert.equal(auditTxnOf(SECOND), null);
    assert.equal(auditTxnOf('{"txn":42}'), null);
    assert.equal(auditTxnOf('not json'), null);
  });
});
