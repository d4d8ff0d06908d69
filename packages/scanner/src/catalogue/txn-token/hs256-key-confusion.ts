import { tokenAttack } from './define.ts';

export default tokenAttack(
  'txn.hs256-key-confusion',
  'HS256 keyed with the public key',
  'critical',
  ['CWE-347'],
  "HMAC-SHA256 keyed with the Txn-Token Service's public key (PEM and DER): asymmetric-to-symmetric key confusion.",
  [{ crafted: 'hs256-public-key-pem' }, { crafted: 'hs256-public-key-der' }],
);
