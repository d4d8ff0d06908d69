import { tokenAttack } from './define.ts';

export default tokenAttack(
  'txn.expired',
  'Expired token',
  'high',
  ['CWE-613'],
  'Signed by the real key, exp ten minutes ago.',
  [{ kit: 'expired' }],
);
