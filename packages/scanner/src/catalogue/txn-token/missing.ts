import { tokenAttack } from './define.ts';

export default tokenAttack(
  'txn.missing',
  'No Txn-Token',
  'critical',
  ['CWE-306'],
  'A request with a valid SVID and no Txn-Token header.',
  [{ none: true }],
);
