/**
 * Authorization attacks, on every enforced route. The scanner's own identity is permitted nowhere
 * (lateral movement, path tricks); where the policy permits some workload on the route for test
 * user a (the route's "control", found by probing), the scanner asks to be decided as that workload
 * (`Lockstep-Probe-As`) and changes one thing: the user (object level), the user's roles, or the method.
 */
import { routeLabel, type Control, type Plan, type RouteTarget, type Target } from '../attack.ts';

export const METHODS = ['GET', 'POST', 'PUT', 'PATCH', 'DELETE'];

export function enforcedRoute(target: Target): target is RouteTarget {
  return target.kind === 'route' && !target.route.public;
}

/**
 * The plan of an attack that varies the route's control: inconclusive when the route cannot be
 * judged, when no control could be found, or (`object`) when the manifest names no object of test
 * user a for this owner route — the check applies, it just cannot run.
 */
export function withControl(
  target: RouteTarget,
  build: (control: Control) => Omit<Plan, 'target'>,
  options: { object?: boolean; userB?: boolean } = {},
): Plan[] {
  const label = routeLabel(target);
  const cannotRun = (reason: string): Plan[] => {
    return [{ target: label, attempts: [], enforcedBy: 'authorization', inconclusive: reason }];
  };
  if (target.inconclusive !== null) return cannotRun(target.inconclusive);
  if (options.userB && target.userBProblem !== null) return cannotRun(target.userBProblem);
  if (options.object && target.objectPath === null) {
    return cannotRun(
      'this route looks up the owner of the object it addresses, but the scan manifest names no ' +
        'object of test user a for it: add one under objects: (service, route, params, owner: a)',
    );
  }
  if ('problem' in target.control) return cannotRun(target.control.problem);
  return [{ target: label, ...build(target.control) }];
}

/** Spellings of a path that a lax router might map to another route than its guard decided on. */
export function pathTricks(path: string): string[] {
  const tricks = [`${path}/`, path.toUpperCase(), `/%2e%2e${path}`, `/${path}`, `${path.replace(/\/$/, '')}/.`];
  return [...new Set(tricks.filter((trick) => trick !== path))];
}
