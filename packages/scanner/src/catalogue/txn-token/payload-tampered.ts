import { tokenAttack } from './define.ts';

export default tokenAttack(
  'txn.payload-tampered',
  'Tampered payload',
  'critical',
  ['CWE-345'],
  'A genuine signature over a payload changed afterwards (sub admin, roles admin).',
  [{ crafted: 'payload-tampered' }],
);
