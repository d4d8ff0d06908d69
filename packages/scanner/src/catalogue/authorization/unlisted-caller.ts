import { enforcedRoute } from './define.ts';
import { attempt, NIST, OWASP, routeLabel, type Attack } from '../attack.ts';

export default {
  id: 'authz.unlisted-caller',
  title: 'Valid certificate, not allowed (lateral movement)',
  category: 'authorization',
  severity: 'critical',
  cwe: ['CWE-285'],
  owasp: OWASP.api5,
  nist: NIST.authorization,
  description:
    "The scanner's genuine SVID and a genuine Txn-Token: a workload no policy permits, as a compromised neighbour would call.",
  enforced: 'Refused by the policy (403 LOCKSTEP_ERR_DENIED), or earlier.',
  on: 'route',
  plan: (target, context) =>
    !enforcedRoute(target)
      ? []
      : target.inconclusive !== null
        ? [{ target: routeLabel(target), attempts: [], enforcedBy: 'authorization', inconclusive: target.inconclusive }]
        : [
            {
              target: routeLabel(target),
              attempts: [attempt(target, context, target.objectPath === null ? {} : { path: target.objectPath })],
              enforcedBy: 'authorization',
            },
          ],
} satisfies Attack;
