import { tokenAttack } from './define.ts';

export default tokenAttack(
  'txn.user-token',
  'User token where a Txn-Token is expected',
  'critical',
  ['CWE-287'],
  'An access token (typ at+jwt) and an ID token (typ JWT, client audience), signed by a trusted key, sent as the Txn-Token.',
  [{ kit: 'typ-access-token' }, { kit: 'typ-id-token' }],
);
