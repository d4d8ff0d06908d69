import { tokenAttack } from './define.ts';

export default tokenAttack(
  'txn.nul-claims',
  'NUL byte in a claim',
  'medium',
  ['CWE-158'],
  'Signed by the real key with sub "…\\u0000admin".',
  [{ kit: 'nul-in-claims' }],
);
