import { tokenAttack } from './define.ts';

export default tokenAttack(
  'txn.jku-x5u',
  '"jku" / "x5u" headers',
  'high',
  ['CWE-347', 'CWE-918'],
  'Headers pointing at attacker key URLs; a verifier must never fetch keys a token names.',
  [{ crafted: 'jku' }, { crafted: 'x5u' }],
);
