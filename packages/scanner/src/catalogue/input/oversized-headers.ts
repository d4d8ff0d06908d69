import { asControl, sizeLimited } from './define.ts';
import { attempt, NIST, OWASP, type Attack } from '../attack.ts';

export default {
  id: 'input.oversized-headers',
  title: 'Oversized headers',
  category: 'input',
  severity: 'medium',
  cwe: ['CWE-770'],
  owasp: OWASP.api4,
  nist: NIST.resilience,
  description: 'Request headers of 64 KiB.',
  enforced: 'Refused with 431 LOCKSTEP_ERR_HEADERS_TOO_LARGE (or the connection closed).',
  on: 'route',
  plan: (target, context) =>
    asControl(
      target,
      context,
      (route, control) => ({
        attempts: [
          attempt(route, context, {
            probeAs: control,
            headers: [['x-lockstep-scan-padding', 'a'.repeat(64 * 1024)]],
            ...(route.objectPath === null ? {} : { path: route.objectPath }),
          }),
        ],
        enforcedBy: 'input',
        enforced: sizeLimited('LOCKSTEP_ERR_HEADERS_TOO_LARGE'),
      }),
      false,
    ),
} satisfies Attack;
