import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { withDuplicateMember, withEscapedNul } from './permitted-body.ts';

/** What a lenient parser (JSON.parse: the last duplicate wins) makes of a body. */
const lenient = (text: string): unknown => JSON.parse(text);

describe('bodies varied from the one a route admitted', () => {
  it('writes the first member twice: first-wins and last-wins parsers both read the admitted body', () => {
    const admitted = '{"item":"tea","quantity":1}';
    const duplicated = withDuplicateMember(admitted);
    assert.equal(duplicated, '{"item":"tea","quantity":1,"item":"tea"}');
    assert.deepEqual(lenient(duplicated), lenient(admitted));
    assert.equal(withDuplicateMember('{"meta":{"a":[1,"x"]}}'), '{"meta":{"a":[1,"x"]},"meta":{"a":[1,"x"]}}');
  });

  it('falls back to a member of its own when no body with members was admitted', () => {
    for (const admitted of [null, '{}', '[1]']) {
      assert.equal(withDuplicateMember(admitted), '{"lockstep_scan":1,"lockstep_scan":1}', String(admitted));
    }
  });

  it('ends the first string with an escaped NUL, or adds a member holding one', () => {
    assert.equal(withEscapedNul('{"quantity":1,"item":"tea"}'), '{"quantity":1,"item":"tea\\u0000"}');
    assert.equal(withEscapedNul('{"quantity":1}'), '{"quantity":1,"lockstep_scan":"\\u0000"}');
    assert.equal(withEscapedNul(null), '{"lockstep_scan":"\\u0000"}');
  });
});
