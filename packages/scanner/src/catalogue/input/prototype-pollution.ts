import { asControl } from './define.ts';
import { attempt, OWASP, type Attack } from '../attack.ts';

export default {
  id: 'input.prototype-pollution',
  title: 'Prototype pollution keys',
  category: 'input',
  severity: 'high',
  cwe: ['CWE-1321'],
  owasp: OWASP.api3,
  nist: null,
  description: 'JSON bodies with "__proto__" and "constructor": { "prototype": … } members, as the permitted workload.',
  enforced: 'Refused by the input step (400).',
  on: 'route',
  plan: (target, context) =>
    asControl(target, context, (route, control) => ({
      attempts: ['{"__proto__":{"isAdmin":true}}', '{"constructor":{"prototype":{"isAdmin":true}}}'].map((body) =>
        attempt(route, context, {
          probeAs: control,
          body,
          ...(route.objectPath === null ? {} : { path: route.objectPath }),
        }),
      ),
      enforcedBy: 'input',
    })),
} satisfies Attack;
