/**
 * Transport attacks, at every endpoint: certificates a guard must refuse in step 1, and plain HTTP.
 * Each is sent with a genuine Txn-Token, so a guard that accepted the certificate answers with a
 * later step's refusal (the scanner is permitted nowhere) — which is how the scanner tells.
 */
import type { Credential } from '../../send.ts';
import {
  attempt,
  NIST,
  OWASP,
  type Attack,
  type EndpointTarget,
  type Plan,
  type ScanContext,
  type Target,
} from '../attack.ts';

export function onEndpoint(target: Target, plan: (target: EndpointTarget) => Omit<Plan, 'target'>): Plan[] {
  if (target.kind !== 'endpoint') return [];
  if (target.inconclusive !== null)
    return [{ target: target.endpoint, attempts: [], enforcedBy: 'transport', inconclusive: target.inconclusive }];
  return [{ target: target.endpoint, ...plan(target) }];
}

export function certificateAttack(
  id: string,
  title: string,
  severity: Attack['severity'],
  cwe: string[],
  description: string,
  credentials: (context: ScanContext) => Credential[],
): Attack {
  return {
    id,
    title,
    category: 'transport',
    severity,
    cwe,
    owasp: OWASP.api2,
    nist: NIST.authentication,
    description,
    enforced: 'Refused by the transport step (401 LOCKSTEP_ERR_PEER_*) or in the TLS handshake.',
    on: 'endpoint',
    plan: (target, context) =>
      onEndpoint(target, (endpoint) => ({
        attempts: credentials(context).map((via) => attempt(endpoint, context, { via })),
        enforcedBy: 'transport',
      })),
  };
}
