import { tokenAttack } from './define.ts';

export default tokenAttack(
  'txn.kid-unknown',
  'Unknown "kid"',
  'high',
  ['CWE-347'],
  'A key id the Txn-Token Service never published, signed with an attacker key.',
  [{ crafted: 'kid-unknown' }],
);
