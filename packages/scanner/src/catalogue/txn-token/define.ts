/**
 * Txn-Token attacks, on every enforced route: tokens a guard must refuse in step 2. Each is sent
 * with the scanner's genuine SVID; a guard that accepted the token answers with the policy's denial
 * instead (the scanner is permitted nowhere). Tokens come from the kit (signed by the real key,
 * defective in one way) or are crafted here (unsigned, forged, or signed with keys nobody trusts).
 */
import type { DefectiveToken } from '@lockstep/control-plane';
import type { Answer } from '../../send.ts';
import {
  attempt,
  NIST,
  OWASP,
  routeLabel,
  type Attack,
  type CraftedToken,
  type Plan,
  type ScanContext,
  type Target,
} from '../attack.ts';

export type TokenSource =
  | { readonly kit: DefectiveToken }
  | { readonly crafted: CraftedToken }
  | { readonly none: true }
  | { readonly twice: true };

export function onRoute(target: Target, build: () => Omit<Plan, 'target'>): Plan[] {
  if (target.kind !== 'route' || target.route.public) return [];
  if (target.inconclusive !== null)
    return [{ target: routeLabel(target), attempts: [], enforcedBy: 'token', inconclusive: target.inconclusive }];
  return [{ target: routeLabel(target), ...build() }];
}

export function headerValues(source: TokenSource, context: ScanContext): string[] {
  if ('kit' in source) return [context.tokens.defective[source.kit]];
  if ('crafted' in source) return [context.tokens.crafted[source.crafted]];
  if ('twice' in source) return [context.tokens.a, context.tokens.a];
  return [];
}

export function tokenAttack(
  id: string,
  title: string,
  severity: Attack['severity'],
  cwe: string[],
  description: string,
  sources: TokenSource[],
  extra: { owasp?: string; enforced?: (answer: Answer) => boolean } = {},
): Attack {
  return {
    id,
    title,
    category: 'txn-token',
    severity,
    cwe,
    owasp: extra.owasp ?? OWASP.api2,
    nist: NIST.tokens,
    description,
    enforced: 'Refused by the Txn-Token step (401 LOCKSTEP_ERR_TXN_TOKEN_*), or earlier.',
    on: 'route',
    plan: (target, context) =>
      onRoute(target, () => ({
        attempts: sources.map((source) => attempt(target, context, { token: headerValues(source, context) })),
        enforcedBy: 'token',
        ...(extra.enforced === undefined ? {} : { enforced: extra.enforced }),
      })),
  };
}
