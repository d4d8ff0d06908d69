/**
 * The shop's policies pass their own test cases (policies/tests.yaml), run the way CI runs them:
 * `lockstep policy test examples/shop/policies`.
 */
import assert from 'node:assert/strict';
import { it } from 'node:test';
import { main } from '@lockstep/cli';
import { SHOP_POLICIES } from '../launch.ts';

it('passes every case of policies/tests.yaml, and the directory validates strictly', async () => {
  const out: string[] = [];
  assert.equal(
    await main(
      ['policy', 'validate', SHOP_POLICIES],
      (line) => out.push(line),
      (line) => out.push(line),
    ),
    0,
    out.join('\n'),
  );
  const tested: string[] = [];
  const code = await main(
    ['policy', 'test', SHOP_POLICIES],
    (line) => tested.push(line),
    (line) => tested.push(line),
  );
  assert.equal(code, 0, tested.join('\n'));
  assert.match(tested.at(-1) ?? '', /^28 passed, 0 failed/);
});
