import * as cedar from '@cedar-policy/cedar-wasm/nodejs';
import type { AuthorizationAnswer, Context } from '@cedar-policy/cedar-wasm/nodejs';
import type { AuthorizationRequest } from '../request-context.ts';
import { describeCedarError } from './describe-cedar-error.ts';

export type Evaluation = {
  readonly decision: 'allow' | 'deny';
  readonly policyIds: readonly string[];
  readonly errors: readonly string[];
  /** False when the outcome depends on something other than (policy version, request). */
  readonly cacheable: boolean;
};

const NONE: readonly string[] = Object.freeze([]);

/**
 * One Cedar evaluation against the schema and policy set preparsed under `preparsedId`, with
 * request validation on. Whatever goes wrong, the answer is a deny carrying the reason.
 */
export function evaluateRequest(preparsedId: string, request: AuthorizationRequest): Evaluation {
  let answer: AuthorizationAnswer;
  try {
    answer = cedar.statefulIsAuthorized({
      principal: { type: 'Lockstep::Workload', id: request.principal },
      action: { type: 'Lockstep::Action', id: request.action },
      resource: { type: 'Lockstep::Service', id: request.resource },
      context: request.context as unknown as Context,
      entities: [],
      preparsedSchemaName: preparsedId,
      preparsedPolicySetId: preparsedId,
      validateRequest: true,
    });
  } catch (error) {
    // wasm-bindgen throws on values it cannot convert (functions, bigints...): fail closed.
    return {
      decision: 'deny',
      policyIds: NONE,
      errors: Object.freeze([`request not evaluable: ${String(error)}`]),
      cacheable: false,
    };
  }
  if (answer.type === 'failure') {
    return {
      decision: 'deny',
      policyIds: NONE,
      errors: Object.freeze(answer.errors.map(describeCedarError)),
      cacheable: true,
    };
  }
  const { decision, diagnostics } = answer.response;
  return {
    decision,
    policyIds: Object.freeze([...diagnostics.reason].sort()),
    errors: diagnostics.errors.length
      ? Object.freeze(diagnostics.errors.map(({ policyId, error }) => `${policyId}: ${describeCedarError(error)}`))
      : NONE,
    cacheable: true,
  };
}
