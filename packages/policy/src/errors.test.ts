import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { describe, it } from 'node:test';
import { PolicyError, policyErrorCodes } from './errors.ts';

describe('PolicyError', () => {
  it('has every code documented in the README, and every documented code exists', () => {
    const readme = readFileSync(new URL('../README.md', import.meta.url), 'utf8');
    const documented = new Set(readme.match(/LOCKSTEP_POLICY_[A-Z_]+/g));
    assert.deepEqual([...documented].sort(), [...policyErrorCodes].sort());
  });

  it('lists problems as file:line lines, or file alone when the line is unknown', () => {
    const error = PolicyError.fromProblems('LOCKSTEP_POLICY_PARSE', [
      { file: 'policies/a.cedar', line: 3, message: 'unexpected token; fix it' },
      { file: 'policies/b.cedar', message: 'no policy' },
    ]);
    assert.equal(error.message, 'policies/a.cedar:3: unexpected token; fix it\npolicies/b.cedar: no policy');
    assert.equal(error.name, 'PolicyError');
    assert.equal(error.problems.length, 2);
    assert.ok(error instanceof Error);
  });
});
