import assert from 'node:assert/strict';
import { GuardConfigError } from '../src/errors.ts';

/** Asserts that `attempt` refuses with a GuardConfigError whose message holds every fragment. */
export function assertConfigError(attempt: () => unknown, ...fragments: string[]): void {
  assert.throws(attempt, (error: unknown) => {
    assert.ok(error instanceof GuardConfigError, `expected a GuardConfigError, got ${String(error)}`);
    assert.ok(error instanceof TypeError);
    assert.equal(error.code, 'LOCKSTEP_CONFIG_INVALID');
    for (const fragment of fragments)
      assert.ok(error.message.includes(fragment), `"${error.message}" should include "${fragment}"`);
    return true;
  });
}
