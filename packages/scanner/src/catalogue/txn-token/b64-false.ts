import { tokenAttack } from './define.ts';

export default tokenAttack(
  'txn.b64-false',
  '"b64": false',
  'medium',
  ['CWE-347'],
  'RFC 7797 unencoded payload, signed by the real key.',
  [{ kit: 'b64-false' }],
);
