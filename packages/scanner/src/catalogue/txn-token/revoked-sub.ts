import { tokenAttack } from './define.ts';

export default tokenAttack(
  'txn.revoked-sub',
  'Revoked subject',
  'critical',
  ['CWE-613'],
  'A genuine token for a subject the control plane has revoked.',
  [{ kit: 'revoked-sub' }],
);
