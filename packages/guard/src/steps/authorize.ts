/**
 * Step 3 — authorization. One Cedar question per request: may workload <caller> perform <action> on
 * service <this> in this transaction context? The policy engine answers from its decision cache when
 * it has seen the equivalent request under the same policy version; otherwise it asks Cedar.
 * Deny by default: no permitting policy means 403.
 */
import type { PolicyEngine, RequestContext } from '@lockstep/policy';
import { GuardError } from '../errors.ts';
import type { PeerIdentity } from './transport.ts';
import type { VerifiedTxnToken } from './txn-token.ts';

export interface AuthorizationResult {
  readonly policyIds: readonly string[];
  readonly policyVersion: string;
}

export interface AuthorizeStep {
  decide(peer: PeerIdentity, txn: VerifiedTxnToken | null, action: string): AuthorizationResult;
}

export function createAuthorizeStep(options: { service: string; engine: PolicyEngine }): AuthorizeStep {
  const { engine, service } = options;
  return {
    decide(peer, txn, action) {
      if (engine.version === null) throw new GuardError('LOCKSTEP_ERR_NO_POLICY');
      const context: RequestContext = {
        sub: txn?.claims.sub ?? '',
        roles: txn?.roles ?? [],
        scope: txn?.scope ?? [],
        requester: txn?.claims.req_wl ?? '',
        callerService: peer.service,
        ...(txn?.tenant !== undefined ? { tenant: txn.tenant } : {}),
      };
      const answer = engine.authorize({ principal: peer.spiffeId, action, resource: service, context });
      if (answer.decision !== 'allow') {
        const why = answer.errors.length > 0 ? `; policy errors: ${answer.errors.join('; ')}` : '';
        const forbidden = answer.policyIds.length > 0 ? ` (forbidden by ${answer.policyIds.join(', ')})` : '';
        throw new GuardError('LOCKSTEP_ERR_DENIED', `no policy permits ${peer.spiffeId} to ${action} on ${service}${forbidden}${why}`, answer.policyIds);
      }
      return { policyIds: answer.policyIds, policyVersion: answer.version };
    },
  };
}
