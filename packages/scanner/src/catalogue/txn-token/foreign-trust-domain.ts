import { tokenAttack } from './define.ts';

export default tokenAttack(
  'txn.foreign-trust-domain',
  'Txn-Token from another trust domain',
  'critical',
  ['CWE-346'],
  "A well-formed Txn-Token issued by another trust domain's token service (its own key, its own audience).",
  [{ crafted: 'foreign-trust-domain' }],
);
