import { tokenAttack } from './define.ts';

export default tokenAttack(
  'txn.wrong-audience',
  'Wrong audience',
  'high',
  ['CWE-345'],
  'Signed by the real key for another trust domain, and with an audience array.',
  [{ kit: 'foreign-audience' }, { kit: 'audience-array' }],
);
