import { tokenAttack } from './define.ts';

export default tokenAttack(
  'txn.kid-traversal',
  '"kid" path traversal',
  'high',
  ['CWE-22'],
  '"kid": "../../etc/passwd", signed with an attacker key.',
  [{ crafted: 'kid-traversal' }],
);
