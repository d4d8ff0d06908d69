import { tokenAttack } from './define.ts';

export default tokenAttack(
  'txn.claim-wrong-type',
  'Claim of the wrong type',
  'high',
  ['CWE-704', 'CWE-843'],
  'Signed by the real key with tctx.roles "admin", a string where an array of strings belongs: refused, never coerced ' +
    '(to [] or to ["admin"]).',
  [{ kit: 'roles-string' }],
);
