/**
 * Step 3 — authorization. One Cedar question per request: may workload <caller> perform <action> on
 * service <this> in this transaction context? Deny by default: no permitting policy means 403.
 *
 * Two caches answer repeated questions. The policy engine's decision cache is keyed by (policy
 * version, canonical request) and serves any request equivalent to one already decided. In front of
 * it, each verified token remembers its own answers per (action, caller, policy version): every input
 * of the decision is fixed by those — the context comes from the token and the caller's SPIFFE ID —
 * so the steady state is a WeakMap and a Map lookup, without building the canonical request.
 */
import type { AuthorizationResult as EngineResult, PolicyEngine, RequestContext } from '@lockstep/policy';
import { GuardError } from '../errors.ts';
import type { PeerIdentity } from './transport.ts';
import type { VerifiedTxnToken } from './txn-token.ts';

export interface AuthorizationResult {
  readonly policyIds: readonly string[];
  readonly policyVersion: string;
}

export interface AuthorizeStep {
  /**
   * `owner`: for object-level routes, the owner of the addressed object. `requester`: a scanner
   * probe's stand-in for the token's requester. With either, the token memo is skipped (the engine's
   * cache keys include them).
   */
  decide(
    peer: PeerIdentity,
    txn: VerifiedTxnToken | null,
    action: string,
    owner?: string,
    requester?: string,
  ): AuthorizationResult;
}

interface Remembered {
  readonly spiffeId: string;
  readonly answer: EngineResult;
}

/** At most this many actions remembered per token; a token is normally used for a handful. */
const ACTIONS_PER_TOKEN = 32;

export function createAuthorizeStep(options: { service: string; engine: PolicyEngine }): AuthorizeStep {
  const { engine, service } = options;
  const byToken = new WeakMap<VerifiedTxnToken, Map<string, Remembered>>();

  function ask(
    peer: PeerIdentity,
    txn: VerifiedTxnToken | null,
    action: string,
    owner?: string,
    requester?: string,
  ): EngineResult {
    const context: RequestContext = {
      sub: txn?.claims.sub ?? '',
      roles: txn?.roles ?? [],
      scope: txn?.scope ?? [],
      // The workload that started the transaction, also after replacements re-issued its token on the
      // way (draft-ietf-oauth-transaction-tokens-10 §13.15): policies say where a transaction may begin.
      requester: requester ?? txn?.requester ?? '',
      callerService: peer.service,
      ...(txn?.tenant !== undefined ? { tenant: txn.tenant } : {}),
      ...(owner !== undefined ? { owner } : {}),
    };
    return engine.authorize({ principal: peer.spiffeId, action, resource: service, context });
  }

  function remembered(peer: PeerIdentity, txn: VerifiedTxnToken, action: string, version: string): EngineResult {
    // Most tokens reach a service for one action: their last answer sits on the token itself.
    const last = txn.lastDecision;
    const lastAnswer = last.answer as EngineResult | null;
    if (
      lastAnswer !== null &&
      last.action === action &&
      lastAnswer.version === version &&
      last.spiffeId === peer.spiffeId
    )
      return lastAnswer;
    const answer = rememberedPerAction(peer, txn, action, version);
    last.action = action;
    last.spiffeId = peer.spiffeId;
    last.answer = answer;
    return answer;
  }

  function rememberedPerAction(
    peer: PeerIdentity,
    txn: VerifiedTxnToken,
    action: string,
    version: string,
  ): EngineResult {
    let answers = byToken.get(txn);
    const known = answers?.get(action);
    if (known !== undefined && known.answer.version === version && known.spiffeId === peer.spiffeId)
      return known.answer;
    const answer = ask(peer, txn, action);
    if (answers === undefined) byToken.set(txn, (answers = new Map()));
    else if (answers.size >= ACTIONS_PER_TOKEN && known === undefined) answers.clear();
    answers.set(action, { spiffeId: peer.spiffeId, answer });
    return answer;
  }

  return {
    decide(peer, txn, action, owner, requester) {
      const version = engine.version;
      if (version === null) throw new GuardError('LOCKSTEP_ERR_NO_POLICY');
      const answer =
        txn === null || owner !== undefined || requester !== undefined
          ? ask(peer, txn, action, owner, requester)
          : remembered(peer, txn, action, version);
      if (answer.decision !== 'allow') {
        const why = answer.errors.length > 0 ? `; policy errors: ${answer.errors.join('; ')}` : '';
        const forbidden = answer.policyIds.length > 0 ? ` (forbidden by ${answer.policyIds.join(', ')})` : '';
        const object =
          owner === undefined
            ? ''
            : ` (object owned by ${JSON.stringify(owner)}, on behalf of ${JSON.stringify(txn?.claims.sub ?? '')})`;
        throw new GuardError(
          'LOCKSTEP_ERR_DENIED',
          `no policy permits ${peer.spiffeId} to ${action} on ${service}${object}${forbidden}${why}`,
          answer.policyIds,
          answer.version,
        );
      }
      return { policyIds: answer.policyIds, policyVersion: answer.version };
    },
  };
}
