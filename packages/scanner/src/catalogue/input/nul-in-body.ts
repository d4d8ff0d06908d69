import { asControl } from './define.ts';
import { withEscapedNul } from './permitted-body.ts';
import { attempt, OWASP, type Attack } from '../attack.ts';

export default {
  id: 'input.nul-in-body',
  title: 'Escaped NUL in a body',
  category: 'input',
  severity: 'medium',
  cwe: ['CWE-158'],
  owasp: OWASP.api8,
  nist: null,
  description:
    'The body the route admits with "\\u0000" at the end of its first string (or a member holding one), as ' +
    'the permitted workload: handlers, logs and C libraries cut strings at a NUL.',
  enforced: 'Refused by the input step (400 LOCKSTEP_ERR_INPUT_INVALID).',
  on: 'route',
  plan: (target, context) =>
    asControl(target, context, (route, control) => ({
      attempts: [
        attempt(route, context, {
          probeAs: control,
          body: withEscapedNul(route.permittedBody),
          ...(route.objectPath === null ? {} : { path: route.objectPath }),
        }),
      ],
      enforcedBy: 'input',
    })),
} satisfies Attack;
