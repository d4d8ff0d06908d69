/**
 * Authorization attacks, on every enforced route. The scanner's own identity is permitted nowhere
 * (lateral movement, path tricks); where the policy permits some workload on the route for test
 * user a (the route's "control", found by probing), the scanner asks to be decided as that workload
 * (`Lockstep-Probe-As`) and changes one thing: the user (object level), the user's roles, or the method.
 */
import { attempt, NIST, OWASP, routeLabel, type Attack, type Plan, type RouteTarget, type Target } from './attack.ts';

const METHODS = ['GET', 'POST', 'PUT', 'PATCH', 'DELETE'];

function enforcedRoute(target: Target): target is RouteTarget {
  return target.kind === 'route' && !target.route.public;
}

function withControl(target: RouteTarget, build: (control: string) => Omit<Plan, 'target'>, options: { object?: boolean } = {}): Plan[] {
  const label = routeLabel(target);
  if (target.unreachable !== null) return [{ target: label, attempts: [], enforcedBy: 'authorization', inconclusive: target.unreachable }];
  if (options.object && target.objectPath === null) return [{ target: label, attempts: [], enforcedBy: 'authorization', skipped: 'no object of test user a named for this route in the scan manifest (objects:)' }];
  if (target.control === null) return [{ target: label, attempts: [], enforcedBy: 'authorization', skipped: 'no workload is permitted on this route for test user a, so there is no allowed request to vary' }];
  return [{ target: label, ...build(target.control) }];
}

/** Spellings of a path that a lax router might map to another route than its guard decided on. */
function pathTricks(path: string): string[] {
  const tricks = [`${path}/`, path.toUpperCase(), `/%2e%2e${path}`, `/${path}`, `${path.replace(/\/$/, '')}/.`];
  return [...new Set(tricks.filter((trick) => trick !== path))];
}

export const authorizationAttacks: readonly Attack[] = [
  {
    id: 'authz.unlisted-caller', title: 'Valid certificate, not allowed (lateral movement)', category: 'authorization', severity: 'critical', cwe: ['CWE-285'],
    owasp: OWASP.api5, nist: NIST.authorization,
    description: 'The scanner\'s genuine SVID and a genuine Txn-Token: a workload no policy permits, as a compromised neighbour would call.',
    enforced: 'Refused by the policy (403 LOCKSTEP_ERR_DENIED), or earlier.',
    on: 'route',
    plan: (target, context) => !enforcedRoute(target) ? [] : target.unreachable !== null
      ? [{ target: routeLabel(target), attempts: [], enforcedBy: 'authorization', inconclusive: target.unreachable }]
      : [{ target: routeLabel(target), attempts: [attempt(target, context, target.objectPath === null ? {} : { path: target.objectPath })], enforcedBy: 'authorization' }],
  },
  {
    id: 'authz.path-tricks', title: 'Path tricks', category: 'authorization', severity: 'high', cwe: ['CWE-22', 'CWE-863'],
    owasp: OWASP.api5, nist: NIST.authorization,
    description: 'The route\'s path with a trailing slash, upper-cased, behind /%2e%2e, with a double slash and a trailing "/.", as the scanner (permitted nowhere).',
    enforced: 'Every spelling refused (403 or 404 from the guard), or earlier.',
    on: 'route',
    plan: (target, context) => !enforcedRoute(target) ? [] : target.unreachable !== null
      ? [{ target: routeLabel(target), attempts: [], enforcedBy: 'authorization', inconclusive: target.unreachable }]
      : [{ target: routeLabel(target), attempts: pathTricks(target.path).map((path) => attempt(target, context, { path })), enforcedBy: 'authorization' }],
  },
  {
    id: 'authz.bola', title: 'Another user\'s object (BOLA)', category: 'authorization', severity: 'critical', cwe: ['CWE-639'],
    owasp: OWASP.api1, nist: NIST.authorization,
    description: 'Test user b reads test user a\'s object through the workload the policy permits on the route.',
    enforced: 'Refused by the policy\'s owner rule (403 LOCKSTEP_ERR_DENIED).',
    on: 'route',
    plan: (target, context) => !enforcedRoute(target) || !target.route.owner ? [] : withControl(target, (control) => ({
      attempts: [attempt(target, context, { probeAs: control, token: context.tokens.b, path: target.objectPath as string })],
      enforcedBy: 'authorization',
    }), { object: true }),
  },
  {
    id: 'authz.missing-role', title: 'Allowed caller, user without the role', category: 'authorization', severity: 'high', cwe: ['CWE-285'],
    owasp: OWASP.api5, nist: NIST.authorization,
    description: 'The permitted workload, on behalf of a test user without roles. Where any signed-in user may act, accept the result in the scan manifest.',
    enforced: 'Refused by the policy (403 LOCKSTEP_ERR_DENIED).',
    on: 'route',
    plan: (target, context) => !enforcedRoute(target) ? [] : withControl(target, (control) => ({
      attempts: [attempt(target, context, { probeAs: control, token: context.tokens.noRole, ...(target.objectPath === null ? {} : { path: target.objectPath }) })],
      enforcedBy: 'authorization',
    }), { object: target.kind === 'route' && target.route.owner }),
  },
  {
    id: 'authz.function-level', title: 'Method switching', category: 'authorization', severity: 'high', cwe: ['CWE-285', 'CWE-650'],
    owasp: OWASP.api5, nist: NIST.authorization,
    description: 'Every method the path does not declare (GET, POST, PUT, PATCH, DELETE), as the workload permitted on the declared one.',
    enforced: 'Refused (404 LOCKSTEP_ERR_ROUTE_UNKNOWN or 403), never admitted.',
    on: 'route',
    plan: (target, context) => {
      if (!enforcedRoute(target)) return [];
      // Once per path: on its first declared method.
      if (target.methodsOfPath[0] !== target.route.method) return [];
      const others = METHODS.filter((method) => !target.methodsOfPath.includes(method));
      if (others.length === 0) return [];
      if (target.unreachable !== null) return [{ target: routeLabel(target), attempts: [], enforcedBy: 'authorization', inconclusive: target.unreachable }];
      const path = target.objectPath ?? target.path;
      return [{
        target: `* ${target.route.template}`,
        attempts: others.map((method) => attempt(target, context, { method, path, probeAs: target.control, ...(method === 'GET' || method === 'DELETE' ? {} : { body: '{}' }) })),
        enforcedBy: 'authorization',
      }];
    },
  },
];
