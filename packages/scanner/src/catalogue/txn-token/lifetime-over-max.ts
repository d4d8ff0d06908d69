import { tokenAttack } from './define.ts';

export default tokenAttack(
  'txn.lifetime-over-max',
  'Lifetime over the maximum',
  'medium',
  ['CWE-613'],
  'Signed by the real key, valid for a day (Txn-Tokens live at most 5 minutes).',
  [{ kit: 'lifetime-over-max' }],
);
