import { tokenAttack } from './define.ts';

export default tokenAttack(
  'txn.duplicate-claims',
  'Duplicate JSON members',
  'medium',
  ['CWE-436'],
  'Signed by the real key with "sub" twice: parsers that read the first and the last disagree.',
  [{ kit: 'duplicate-claims' }],
);
