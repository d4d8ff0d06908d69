import { tokenAttack } from './define.ts';

export default tokenAttack(
  'txn.ecdsa-zero-signature',
  'ECDSA r = s = 0',
  'critical',
  ['CWE-347'],
  'An ES256 signature of 64 zero bytes (CVE-2022-21449, "psychic signatures").',
  [{ crafted: 'ecdsa-zero-signature' }],
);
