import { asControl } from './define.ts';
import { attempt, OWASP, type Attack } from '../attack.ts';

export default {
  id: 'input.wrong-content-type',
  title: 'Wrong content type',
  category: 'input',
  severity: 'low',
  cwe: ['CWE-436'],
  owasp: OWASP.api8,
  nist: null,
  description: 'A text/plain body where JSON is expected, as the permitted workload.',
  enforced: 'Refused with 415 LOCKSTEP_ERR_UNSUPPORTED_MEDIA_TYPE (or 400).',
  on: 'route',
  plan: (target, context) =>
    asControl(target, context, (route, control) => ({
      attempts: [
        attempt(route, context, {
          probeAs: control,
          body: 'item=tea&quantity=1',
          contentType: 'text/plain',
          ...(route.objectPath === null ? {} : { path: route.objectPath }),
        }),
      ],
      enforcedBy: 'input',
    })),
} satisfies Attack;
