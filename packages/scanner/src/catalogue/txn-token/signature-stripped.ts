import { tokenAttack } from './define.ts';

export default tokenAttack(
  'txn.signature-stripped',
  'Signature stripped',
  'critical',
  ['CWE-347'],
  'A genuine token with its signature removed (header.payload.).',
  [{ crafted: 'signature-stripped' }],
);
