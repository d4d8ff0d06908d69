/**
 * Input attacks, on every enforced route with a body method: as the workload the policy permits on
 * the route (so that the request gets past authorization), with bodies the input step must refuse.
 */
import { routeLabel, type Control, type Plan, type RouteTarget, type ScanContext, type Target } from '../attack.ts';
import type { Answer } from '../../send.ts';

export const BODY_METHODS = new Set(['POST', 'PUT', 'PATCH']);

export function asControl(
  target: Target,
  context: ScanContext,
  build: (target: RouteTarget, control: Control) => Omit<Plan, 'target'>,
  bodyOnly = true,
): Plan[] {
  if (target.kind !== 'route' || target.route.public || (bodyOnly && !BODY_METHODS.has(target.route.method))) return [];
  const label = routeLabel(target);
  if (target.inconclusive !== null)
    return [{ target: label, attempts: [], enforcedBy: 'input', inconclusive: target.inconclusive }];
  if ('problem' in target.control) {
    return [{ target: label, attempts: [], enforcedBy: 'input', inconclusive: target.control.problem }];
  }
  void context;
  return [{ target: label, ...build(target, target.control) }];
}

export const sizeLimited = (code: string) => (answer: Answer) => answer.status === null || answer.code === code;
