import { enforcedRoute, pathTricks } from './define.ts';
import { attempt, NIST, OWASP, routeLabel, type Attack } from '../attack.ts';

export default {
  id: 'authz.path-tricks',
  title: 'Path tricks',
  category: 'authorization',
  severity: 'high',
  cwe: ['CWE-22', 'CWE-863'],
  owasp: OWASP.api5,
  nist: NIST.authorization,
  description:
    'The route\'s path with a trailing slash, upper-cased, behind /%2e%2e, with a double slash and a trailing "/.", as the scanner (permitted nowhere).',
  enforced: 'Every spelling refused (403 or 404 from the guard), or earlier.',
  on: 'route',
  plan: (target, context) =>
    !enforcedRoute(target)
      ? []
      : target.inconclusive !== null
        ? [{ target: routeLabel(target), attempts: [], enforcedBy: 'authorization', inconclusive: target.inconclusive }]
        : [
            {
              target: routeLabel(target),
              attempts: pathTricks(target.path).map((path) => attempt(target, context, { path })),
              enforcedBy: 'authorization',
            },
          ],
} satisfies Attack;
