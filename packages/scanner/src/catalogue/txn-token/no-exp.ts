import { tokenAttack } from './define.ts';

export default tokenAttack('txn.no-exp', 'No expiry', 'high', ['CWE-613'], 'Signed by the real key, without exp.', [
  { kit: 'no-exp' },
]);
