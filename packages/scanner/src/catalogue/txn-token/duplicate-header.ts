import { tokenAttack } from './define.ts';

export default tokenAttack(
  'txn.duplicate-header',
  'Two Txn-Token headers',
  'medium',
  ['CWE-436'],
  'The same valid token twice: which one a verifier reads must never be a question.',
  [{ twice: true }],
);
