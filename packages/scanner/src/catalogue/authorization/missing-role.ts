import { enforcedRoute, withControl } from './define.ts';
import { attempt, NIST, OWASP, type Attack } from '../attack.ts';

export default {
  id: 'authz.missing-role',
  title: 'Allowed caller, user without the role',
  category: 'authorization',
  severity: 'high',
  cwe: ['CWE-285'],
  owasp: OWASP.api5,
  nist: NIST.authorization,
  description:
    'The permitted workload, on behalf of a test user without roles. Where any signed-in user may act, accept the result in the scan manifest.',
  enforced: 'Refused by the policy (403 LOCKSTEP_ERR_DENIED).',
  on: 'route',
  plan: (target, context) =>
    !enforcedRoute(target)
      ? []
      : withControl(
          target,
          (control) => ({
            attempts: [
              attempt(target, context, {
                probeAs: control,
                token: context.tokens.noRole,
                ...(target.objectPath === null ? {} : { path: target.objectPath }),
              }),
            ],
            enforcedBy: 'authorization',
          }),
          { object: target.kind === 'route' && target.route.owner },
        ),
} satisfies Attack;
