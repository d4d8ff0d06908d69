import { tokenAttack } from './define.ts';

export default tokenAttack(
  'txn.no-scope',
  'No "scope" claim',
  'medium',
  ['CWE-345'],
  'Signed by the real key without scope, which draft-ietf-oauth-transaction-tokens-10 §9.2 makes REQUIRED: a policy ' +
    'that reads the scope must never see it silently empty.',
  [{ kit: 'scope-missing' }],
);
