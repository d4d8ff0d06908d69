import { tokenAttack } from './define.ts';

export default tokenAttack(
  'txn.not-yet-valid',
  'Token from the future',
  'medium',
  ['CWE-613'],
  'Signed by the real key with nbf, then iat, an hour ahead.',
  [{ kit: 'not-yet-valid' }, { kit: 'issued-in-future' }],
);
