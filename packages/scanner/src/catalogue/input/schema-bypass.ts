import { asControl } from './define.ts';
import { attempt, OWASP, type Attack } from '../attack.ts';

export default {
  id: 'input.schema-bypass',
  title: 'Body outside the schema',
  category: 'input',
  severity: 'medium',
  cwe: ['CWE-20', 'CWE-915'],
  owasp: OWASP.api3,
  nist: null,
  description:
    'A JSON body with nothing but a property no schema names, as the permitted workload: a route without a schema takes it.',
  enforced: 'Refused by the input step (400 LOCKSTEP_ERR_INPUT_INVALID).',
  on: 'route',
  plan: (target, context) =>
    asControl(target, context, (route, control) => ({
      attempts: [
        attempt(route, context, {
          probeAs: control,
          body: '{"lockstep_scan_unknown":{"nested":[1,2,3]}}',
          ...(route.objectPath === null ? {} : { path: route.objectPath }),
        }),
      ],
      enforcedBy: 'input',
    })),
} satisfies Attack;
