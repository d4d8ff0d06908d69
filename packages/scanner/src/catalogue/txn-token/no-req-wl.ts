import { tokenAttack } from './define.ts';

export default tokenAttack(
  'txn.no-req-wl',
  'No "req_wl" claim',
  'medium',
  ['CWE-345'],
  'Signed by the real key without req_wl, REQUIRED by draft -10 §9.2: no requesting workload for a policy to check.',
  [{ kit: 'req-wl-missing' }],
);
