import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { describe, it } from 'node:test';
import { EnrolmentError, TxnTokenError, WORKLOAD_ERROR_CODES } from './errors.ts';

describe('workload error catalogue', () => {
  it('is documented in the README error table: every code, and no code that does not exist', () => {
    const readme = readFileSync(new URL('../README.md', import.meta.url), 'utf8');
    const documented = readme
      .split('\n')
      .flatMap((line) => /^\|\s*`(LOCKSTEP_(?:ENROL|TXN_TOKEN)_[A-Z_]+)`/.exec(line)?.[1] ?? []);
    assert.deepEqual([...documented].sort(), [...WORKLOAD_ERROR_CODES].sort());
  });

  it('carries the code, and the status and OAuth error of an answered refusal', () => {
    const refused = new TxnTokenError('LOCKSTEP_TXN_TOKEN_REFUSED', 'no', { error: 'invalid_grant', status: 400 });
    assert.deepEqual(
      [refused.code, refused.error, refused.status, refused.name],
      ['LOCKSTEP_TXN_TOKEN_REFUSED', 'invalid_grant', 400, 'TxnTokenError'],
    );
    const cause = new Error('ECONNREFUSED');
    const unavailable = new TxnTokenError('LOCKSTEP_TXN_TOKEN_UNAVAILABLE', 'no answer', { cause });
    assert.deepEqual([unavailable.error, unavailable.status, unavailable.cause], [null, null, cause]);
    const enrolment = new EnrolmentError('LOCKSTEP_CP_JOIN_TOKEN_USED', '/v1/join refused', 401);
    assert.deepEqual(
      [enrolment.code, enrolment.status, enrolment.name],
      ['LOCKSTEP_CP_JOIN_TOKEN_USED', 401, 'EnrolmentError'],
    );
  });
});
