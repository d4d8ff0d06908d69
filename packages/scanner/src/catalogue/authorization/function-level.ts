import { METHODS, enforcedRoute } from './define.ts';
import { attempt, NIST, OWASP, routeLabel, type Attack } from '../attack.ts';

export default {
  id: 'authz.function-level',
  title: 'Method switching',
  category: 'authorization',
  severity: 'high',
  cwe: ['CWE-285', 'CWE-650'],
  owasp: OWASP.api5,
  nist: NIST.authorization,
  description:
    'Every method the path does not declare (GET, POST, PUT, PATCH, DELETE), as the workload permitted on the declared one.',
  enforced: 'Refused (404 LOCKSTEP_ERR_ROUTE_UNKNOWN or 403), never admitted.',
  on: 'route',
  plan: (target, context) => {
    if (!enforcedRoute(target)) return [];
    // Once per path: on its first declared method.
    if (target.methodsOfPath[0] !== target.route.method) return [];
    const others = METHODS.filter((method) => !target.methodsOfPath.includes(method));
    if (others.length === 0) return [];
    if (target.inconclusive !== null)
      return [
        { target: routeLabel(target), attempts: [], enforcedBy: 'authorization', inconclusive: target.inconclusive },
      ];
    const path = target.objectPath ?? target.path;
    // Decided as the route's control where there is one, else as the scanner itself: never admitted either way.
    const probeAs = 'problem' in target.control ? null : target.control;
    return [
      {
        target: routeLabel(target, '*'),
        attempts: others.map((method) =>
          attempt(target, context, {
            method,
            path,
            probeAs,
            ...(method === 'GET' || method === 'DELETE' ? {} : { body: '{}' }),
          }),
        ),
        enforcedBy: 'authorization',
      },
    ];
  },
} satisfies Attack;
