/**
 * OpenID AuthZEN Authorization API 1.0, the two evaluation endpoints, mapped onto the guard's
 * decision facts:
 *
 *   subject  { type: 'workload', id: 'spiffe://<td>/svc/<caller>' }  → the principal (asserted)
 *   action   { name: 'orders:read' }                                → the route performing this action
 *   resource { type: 'service', id: '<this service>' }              → must be the protected service
 *   context  { txn_token: '<Txn-Token>', traceparent?: '…' }        → the Txn-Token step, audit
 *
 * The subject comes from the body: whoever may call this endpoint can name any workload. That is why
 * only trusted callers (by their mTLS SVID) are admitted at all. `/evaluations` takes the top-level
 * subject, action, resource and context as defaults for each entry (§7), and the three semantics of
 * `options.evaluations_semantic`.
 */
import type { DecisionFacts } from '@lockstep/guard/decision';

export interface AuthzenEvaluation {
  readonly facts: DecisionFacts;
  /** The resource named, to check against the protected service. */
  readonly resourceId: string;
}

export type EvaluationsSemantic = 'execute_all' | 'deny_on_first_deny' | 'permit_on_first_permit';

export class AuthzenRequestError extends Error {
  override readonly name = 'AuthzenRequestError';
}

type Json = Record<string, unknown>;

function isObject(value: unknown): value is Json {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

function text(value: unknown, where: string): string {
  if (typeof value !== 'string' || value.length === 0 || value.length > 8_192)
    throw new AuthzenRequestError(`${where} must be a non-empty string`);
  return value;
}

function entity(value: unknown, where: string): Json {
  if (!isObject(value)) throw new AuthzenRequestError(`${where} must be an object`);
  return value;
}

/** One evaluation from its four parts (each already defaulted from the top level). */
function evaluation(subject: unknown, action: unknown, resource: unknown, context: unknown): AuthzenEvaluation {
  const subjectId = text(entity(subject, 'subject').id, 'subject.id');
  const actionName = text(entity(action, 'action').name, 'action.name');
  const resourceId = text(entity(resource, 'resource').id, 'resource.id');
  const contextObject = context === undefined ? {} : entity(context, 'context');
  const headers: Record<string, string> = {};
  const txnToken = contextObject.txn_token;
  if (txnToken !== undefined) headers['txn-token'] = text(txnToken, 'context.txn_token');
  const traceparent = contextObject.traceparent;
  if (traceparent !== undefined) headers.traceparent = text(traceparent, 'context.traceparent');
  return {
    resourceId,
    facts: {
      peerCertificateChain: undefined,
      assertedSpiffeId: subjectId,
      action: actionName,
      method: 'AUTHZEN',
      path: '',
      headers,
    },
  };
}

export function parseEvaluation(body: unknown): AuthzenEvaluation {
  if (!isObject(body)) throw new AuthzenRequestError('the request body must be a JSON object');
  return evaluation(body.subject, body.action, body.resource, body.context);
}

export function parseEvaluations(
  body: unknown,
  maxEvaluations: number,
): { evaluations: AuthzenEvaluation[]; semantic: EvaluationsSemantic } {
  if (!isObject(body)) throw new AuthzenRequestError('the request body must be a JSON object');
  const list = body.evaluations;
  const options = body.options === undefined ? {} : entity(body.options, 'options');
  const semantic = options.evaluations_semantic ?? 'execute_all';
  if (semantic !== 'execute_all' && semantic !== 'deny_on_first_deny' && semantic !== 'permit_on_first_permit')
    throw new AuthzenRequestError(
      'options.evaluations_semantic must be execute_all, deny_on_first_deny or permit_on_first_permit',
    );
  // §7: without an evaluations array the request is a single evaluation.
  if (list === undefined) return { evaluations: [parseEvaluation(body)], semantic };
  if (!Array.isArray(list) || list.length === 0 || list.length > maxEvaluations)
    throw new AuthzenRequestError(`evaluations must be an array of 1 to ${maxEvaluations} objects`);
  const evaluations = list.map((item: unknown, index) => {
    const entry = entity(item, `evaluations[${index}]`);
    return evaluation(
      entry.subject ?? body.subject,
      entry.action ?? body.action,
      entry.resource ?? body.resource,
      entry.context ?? body.context,
    );
  });
  return { evaluations, semantic };
}
