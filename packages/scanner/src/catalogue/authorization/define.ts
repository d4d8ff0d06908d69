/**
 * Authorization attacks, on every enforced route. The scanner's own identity is permitted nowhere
 * (lateral movement, path tricks); where the policy permits some workload on the route for test
 * user a (the route's "control", found by probing), the scanner asks to be decided as that workload
 * (`Lockstep-Probe-As`) and changes one thing: the user (object level), the user's roles, or the method.
 */
import { NO_CONTROL, routeLabel, type Control, type Plan, type RouteTarget, type Target } from '../attack.ts';

export const METHODS = ['GET', 'POST', 'PUT', 'PATCH', 'DELETE'];

export function enforcedRoute(target: Target): target is RouteTarget {
  return target.kind === 'route' && !target.route.public;
}

export function withControl(target: RouteTarget, build: (control: Control) => Omit<Plan, 'target'>, options: { object?: boolean } = {}): Plan[] {
  const label = routeLabel(target);
  if (target.unreachable !== null) return [{ target: label, attempts: [], enforcedBy: 'authorization', inconclusive: target.unreachable }];
  if (options.object && target.objectPath === null) return [{ target: label, attempts: [], enforcedBy: 'authorization', skipped: 'no object of test user a named for this route in the scan manifest (objects:)' }];
  if (target.control === null) return [{ target: label, attempts: [], enforcedBy: 'authorization', skipped: NO_CONTROL }];
  return [{ target: label, ...build(target.control) }];
}

/** Spellings of a path that a lax router might map to another route than its guard decided on. */
export function pathTricks(path: string): string[] {
  const tricks = [`${path}/`, path.toUpperCase(), `/%2e%2e${path}`, `/${path}`, `${path.replace(/\/$/, '')}/.`];
  return [...new Set(tricks.filter((trick) => trick !== path))];
}

