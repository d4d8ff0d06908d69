import { tokenAttack } from './define.ts';

export default tokenAttack(
  'txn.alg-none',
  '"alg": "none" (every casing)',
  'critical',
  ['CWE-347'],
  'Unsecured JWTs with alg none, None, NONE and nOnE and an empty signature.',
  [
    { crafted: 'alg-none' },
    { crafted: 'alg-none-title' },
    { crafted: 'alg-none-upper' },
    { crafted: 'alg-none-mixed' },
  ],
);
