import { attempt, NIST, OWASP, type Attack } from '../attack.ts';
import type { Answer } from '../../send.ts';

export default {
  id: 'transport.plaintext',
  title: 'Plain HTTP to the service port',
  category: 'transport',
  severity: 'critical',
  cwe: ['CWE-319'],
  owasp: OWASP.api8,
  nist: NIST.communication,
  description:
    'A plain HTTP request (no TLS) to every registered port, as a caller inside the perimeter would send it.',
  enforced: "No HTTP answer (the TLS port closes the connection) or the guard's LOCKSTEP_ERR_TLS_HANDSHAKE.",
  on: 'endpoint',
  // Needs no reachable guard: a port that answers plain HTTP is the finding.
  plan: (target, context) =>
    target.kind !== 'endpoint'
      ? []
      : [
          {
            target: target.endpoint,
            attempts: [attempt(target, context, { via: 'plaintext', headers: [['x-user', 'lockstep-scan']] })],
            enforcedBy: 'transport',
            enforced: (answer: Answer) => answer.status === null || answer.code === 'LOCKSTEP_ERR_TLS_HANDSHAKE',
          },
        ],
} satisfies Attack;
