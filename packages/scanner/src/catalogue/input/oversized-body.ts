import { asControl, sizeLimited } from './define.ts';
import { attempt, NIST, OWASP, type Attack } from '../attack.ts';

export default {
  id: 'input.oversized-body',
  title: 'Oversized body',
  category: 'input',
  severity: 'medium',
  cwe: ['CWE-770'],
  owasp: OWASP.api4,
  nist: NIST.resilience,
  description: 'A 2 MiB JSON body, as the permitted workload.',
  enforced: 'Refused with 413 LOCKSTEP_ERR_BODY_TOO_LARGE (or the connection closed).',
  on: 'route',
  plan: (target, context) =>
    asControl(target, context, (route, control) => ({
      attempts: [
        attempt(route, context, {
          probeAs: control,
          body: `{"pad":"${'a'.repeat(2 * 1024 * 1024)}"}`,
          ...(route.objectPath === null ? {} : { path: route.objectPath }),
        }),
      ],
      enforcedBy: 'input',
      enforced: sizeLimited('LOCKSTEP_ERR_BODY_TOO_LARGE'),
    })),
} satisfies Attack;
