import { enforcedRoute, withControl } from './define.ts';
import { attempt, NIST, OWASP, type Attack } from '../attack.ts';

export default {
  id: 'authz.bola',
  title: "Another user's object (BOLA)",
  category: 'authorization',
  severity: 'critical',
  cwe: ['CWE-639'],
  owasp: OWASP.api1,
  nist: NIST.authorization,
  description: "Test user b reads test user a's object through the workload the policy permits on the route.",
  enforced: "Refused by the policy's owner rule (403 LOCKSTEP_ERR_DENIED).",
  on: 'route',
  plan: (target, context) =>
    !enforcedRoute(target) || !target.route.owner
      ? []
      : withControl(
          target,
          (control) => ({
            attempts: [
              attempt(target, context, {
                probeAs: control,
                token: context.tokens.b,
                path: target.objectPath as string,
              }),
            ],
            enforcedBy: 'authorization',
          }),
          { object: true, userB: true },
        ),
} satisfies Attack;
