/**
 * OpenID AuthZEN Authorization API 1.0, the two evaluation endpoints, mapped onto the guard's
 * decision facts:
 *
 *   subject  { type: 'workload', id: 'spiffe://<td>/svc/<caller>' }  → the principal (asserted)
 *   action   { name: 'orders:read' }                                → the route performing this action
 *   resource { type: 'service', id: '<this service>' }              → must be the protected service
 *            properties?: { method: 'GET', path: '/orders/42' }     → that request's route, with its
 *                                                                      params (owner rules); its action
 *                                                                      must be action.name
 *   context  { txn_token: '<Txn-Token>', traceparent?: '…' }        → the Txn-Token step, audit
 *
 * Other types are refused (400): a user is not a subject here but the Txn-Token's `sub`, and a
 * resource is a service (or one request to it), never an object id the guard cannot look up.
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

function typed(value: unknown, where: string, type: string, hint: string): Json {
  const object = entity(value, where);
  if (object.type !== type)
    throw new AuthzenRequestError(`${where}.type must be "${type}" (${hint}); got ${JSON.stringify(object.type)}`);
  return object;
}

/** `resource.properties.method` and `.path`: one request to the service, decided with its route's params. */
function requestOf(resource: Json): { method: string; path: string } | null {
  if (resource.properties === undefined) return null;
  const properties = entity(resource.properties, 'resource.properties');
  if (properties.path === undefined && properties.method === undefined) return null;
  const method = text(properties.method, 'resource.properties.method');
  const path = text(properties.path, 'resource.properties.path');
  if (!/^[A-Z]{1,16}$/.test(method))
    throw new AuthzenRequestError('resource.properties.method must be an HTTP method in capitals, e.g. "GET"');
  if (!path.startsWith('/'))
    throw new AuthzenRequestError('resource.properties.path must be a path, e.g. "/orders/42"');
  return { method, path };
}

/** One evaluation from its four parts (each already defaulted from the top level). */
function evaluation(subject: unknown, action: unknown, resource: unknown, context: unknown): AuthzenEvaluation {
  const subjectHint = 'a SPIFFE ID; the user is the Txn-Token in context.txn_token';
  const subjectId = text(typed(subject, 'subject', 'workload', subjectHint).id, 'subject.id');
  const actionName = text(entity(action, 'action').name, 'action.name');
  const resourceObject = typed(resource, 'resource', 'service', 'its id is the protected service');
  const resourceId = text(resourceObject.id, 'resource.id');
  const target = requestOf(resourceObject);
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
      method: target?.method ?? 'AUTHZEN',
      path: target?.path ?? '',
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
