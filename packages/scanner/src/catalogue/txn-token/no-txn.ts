import { tokenAttack } from './define.ts';

export default tokenAttack(
  'txn.no-txn',
  'No "txn" claim',
  'low',
  ['CWE-345'],
  'Signed by the real key without the transaction id every audit event correlates on.',
  [{ kit: 'no-txn' }],
);
