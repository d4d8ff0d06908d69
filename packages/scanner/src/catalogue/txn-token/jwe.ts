import { tokenAttack } from './define.ts';

export default tokenAttack(
  'txn.jwe',
  'JWE instead of JWS',
  'medium',
  ['CWE-345'],
  'A five-part JWE (dir, A256GCM) carrying the claims.',
  [{ crafted: 'jwe' }],
);
