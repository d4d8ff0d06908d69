import { asControl } from './define.ts';
import { withDuplicateMember } from './permitted-body.ts';
import { attempt, OWASP, type Attack } from '../attack.ts';

export default {
  id: 'input.duplicate-keys',
  title: 'Duplicate keys in a body',
  category: 'input',
  severity: 'medium',
  cwe: ['CWE-436', 'CWE-694'],
  owasp: OWASP.api3,
  nist: null,
  description:
    "The body the route admits (the manifest's example, else {}) with its first member written twice, as " +
    'the permitted workload: any lenient parser reads the admitted body, so only a strict parser refuses it. ' +
    'Without an admitted body: {"lockstep_scan":1,"lockstep_scan":1}.',
  enforced: 'Refused by the input step (400 LOCKSTEP_ERR_INPUT_INVALID).',
  on: 'route',
  plan: (target, context) =>
    asControl(target, context, (route, control) => ({
      attempts: [
        attempt(route, context, {
          probeAs: control,
          body: withDuplicateMember(route.permittedBody),
          ...(route.objectPath === null ? {} : { path: route.objectPath }),
        }),
      ],
      enforcedBy: 'input',
    })),
} satisfies Attack;
