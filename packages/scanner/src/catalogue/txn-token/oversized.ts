import { tokenAttack } from './define.ts';
import { OWASP } from '../attack.ts';

export default tokenAttack(
  'txn.oversized',
  '1 MB token',
  'medium',
  ['CWE-770'],
  'A 1 MB Txn-Token header.',
  [{ crafted: 'oversized' }],
  {
    owasp: OWASP.api4,
    enforced: (answer) =>
      answer.status === null ||
      answer.code === 'LOCKSTEP_ERR_HEADERS_TOO_LARGE' ||
      /^LOCKSTEP_ERR_(PEER_|TXN_TOKEN_)/.test(answer.code ?? ''),
  },
);
