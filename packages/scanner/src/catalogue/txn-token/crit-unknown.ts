import { tokenAttack } from './define.ts';

export default tokenAttack(
  'txn.crit-unknown',
  'Unknown critical header',
  'medium',
  ['CWE-347'],
  'Signed by the real key with crit ["exp-x"]: an extension the verifier does not understand must be refused.',
  [{ kit: 'crit-unknown' }],
);
