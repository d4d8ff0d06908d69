import { tokenAttack } from './define.ts';

export default tokenAttack(
  'txn.embedded-jwk',
  'Embedded "jwk" header',
  'critical',
  ['CWE-347'],
  'Signed with an attacker key carried in the token\'s own "jwk" header.',
  [{ crafted: 'embedded-jwk' }],
);
