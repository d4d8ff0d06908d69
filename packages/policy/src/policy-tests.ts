/**
 * Policy unit tests: cases of (principal, action, resource, context) with the decision expected and,
 * optionally, the policy expected to decide it — evaluated by Cedar against each service's slice,
 * exactly as that service's guard would. `lockstep policy test` reads them from YAML.
 */
import { createPolicyEngine } from './engine.ts';
import type { PolicySet } from './policy-set.ts';
import type { RequestContext } from './request-context.ts';
import { sliceFor } from './slice.ts';

export interface PolicyTestCase {
  readonly name: string;
  /** A SPIFFE ID. */
  readonly principal: string;
  readonly action: string;
  /** The service deciding. */
  readonly resource: string;
  readonly context: RequestContext;
  readonly expect: 'allow' | 'deny';
  /** The policy id expected among those that decided (the permit for an allow, a forbid for a deny). */
  readonly policy?: string;
}

export interface PolicyTestResult {
  readonly name: string;
  readonly passed: boolean;
  readonly decision: 'allow' | 'deny';
  readonly policyIds: readonly string[];
  readonly errors: readonly string[];
  /** What differs, in words, when it failed. */
  readonly diff: string | null;
}

export function runPolicyTests(set: PolicySet, cases: readonly PolicyTestCase[]): PolicyTestResult[] {
  const engines = new Map<string, ReturnType<typeof createPolicyEngine>>();
  return cases.map((testCase) => {
    let engine = engines.get(testCase.resource);
    if (engine === undefined) {
      engine = createPolicyEngine({ cacheSize: 0 });
      engine.load(sliceFor(set, testCase.resource));
      engines.set(testCase.resource, engine);
    }
    const result = engine.authorize({
      principal: testCase.principal,
      action: testCase.action,
      resource: testCase.resource,
      context: testCase.context,
    });
    const decidedBy = result.policyIds.length > 0 ? result.policyIds.join(', ') : 'no policy matched';
    const problems: string[] = [];
    if (result.decision !== testCase.expect)
      problems.push(`expected ${testCase.expect}, got ${result.decision} (${decidedBy})`);
    else if (testCase.policy !== undefined && !result.policyIds.includes(testCase.policy))
      problems.push(`expected ${testCase.expect} by ${testCase.policy}, got ${result.decision} by ${decidedBy}`);
    if (result.errors.length > 0) problems.push(`evaluation errors: ${result.errors.join('; ')}`);
    return {
      name: testCase.name,
      passed: problems.length === 0,
      decision: result.decision,
      policyIds: result.policyIds,
      errors: result.errors,
      diff: problems.length === 0 ? null : problems.join('; '),
    };
  });
}
