import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { Answer } from './send.ts';
import { describeAnswer, refusedBy, stepOf } from './verdict.ts';

const answer = (status: number | null, code: string | null, probeAdmitted = false): Answer => ({
  status,
  code,
  requestId: status === null ? null : 'r-1',
  probeAdmitted,
  error: status === null ? 'ECONNRESET' : null,
});

describe('verdict', () => {
  it("reads which step refused from the guard's code", () => {
    assert.equal(stepOf(answer(null, null)), 'connection');
    assert.equal(stepOf(answer(401, 'LOCKSTEP_ERR_PEER_UNTRUSTED')), 'transport');
    assert.equal(stepOf(answer(401, 'LOCKSTEP_ERR_TXN_TOKEN_INVALID')), 'token');
    assert.equal(stepOf(answer(403, 'LOCKSTEP_ERR_DENIED')), 'authorization');
    assert.equal(stepOf(answer(404, 'LOCKSTEP_ERR_ROUTE_UNKNOWN')), 'authorization');
    assert.equal(stepOf(answer(413, 'LOCKSTEP_ERR_BODY_TOO_LARGE')), 'input');
    assert.equal(stepOf(answer(200, null, true)), 'admitted');
    assert.equal(stepOf(answer(200, null)), 'admitted', "a handler's answer: nothing refused it");
    assert.equal(stepOf(answer(401, null)), 'unknown', "a refusal without a guard code is not the guard's");
  });

  it('counts a refusal at the expected step or earlier as enforced, and never an admission', () => {
    assert.equal(refusedBy(answer(401, 'LOCKSTEP_ERR_PEER_CERT_MISSING'), 'token'), true);
    assert.equal(
      refusedBy(answer(403, 'LOCKSTEP_ERR_DENIED'), 'token'),
      false,
      'a token attack that reached the policy got past the token step',
    );
    assert.equal(refusedBy(answer(200, null, true), 'input'), false);
    assert.equal(refusedBy(answer(401, null), 'transport'), false);
    assert.equal(describeAnswer(answer(403, 'LOCKSTEP_ERR_DENIED')), 'HTTP 403 LOCKSTEP_ERR_DENIED (request r-1)');
    assert.equal(describeAnswer(answer(null, null)), 'no HTTP answer (ECONNRESET)');
  });
});
