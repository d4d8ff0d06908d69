import { tokenAttack } from './define.ts';

export default tokenAttack(
  'txn.tctx-proto-key',
  '"__proto__" in the transaction context',
  'high',
  ['CWE-1321'],
  'Signed by the real key with a "__proto__" member in tctx carrying roles ["admin"]: a naive copy of tctx inherits ' +
    'them.',
  [{ kit: 'tctx-proto-key' }],
);
