import { tokenAttack } from './define.ts';

export default tokenAttack(
  'txn.wrong-type',
  'Plain JWT instead of a Txn-Token',
  'high',
  ['CWE-345'],
  'Signed by the real key with typ JWT instead of txntoken+jwt.',
  [{ kit: 'typ-plain-jwt' }],
);
