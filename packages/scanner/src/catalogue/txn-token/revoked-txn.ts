import { tokenAttack } from './define.ts';

export default tokenAttack(
  'txn.revoked-txn',
  'Revoked transaction',
  'high',
  ['CWE-613'],
  'A genuine token whose transaction the control plane has revoked.',
  [{ kit: 'revoked-txn' }],
);
