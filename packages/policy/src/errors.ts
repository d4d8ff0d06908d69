/** Every code a PolicyError can carry; README.md documents each one (a test checks both ways). */
export const policyErrorCodes = [
  'LOCKSTEP_POLICY_READ',
  'LOCKSTEP_POLICY_SCHEMA',
  'LOCKSTEP_POLICY_PARSE',
  'LOCKSTEP_POLICY_TEMPLATE',
  'LOCKSTEP_POLICY_MISSING_ID',
  'LOCKSTEP_POLICY_DUPLICATE_ID',
  'LOCKSTEP_POLICY_EMPTY',
  'LOCKSTEP_POLICY_VALIDATION',
  'LOCKSTEP_POLICY_BUNDLE_SIGNATURE',
  'LOCKSTEP_POLICY_BUNDLE_INVALID',
  'LOCKSTEP_POLICY_BUNDLE_STALE',
  'LOCKSTEP_POLICY_LOAD',
  'LOCKSTEP_POLICY_NOT_LOADED',
] as const;

export type PolicyErrorCode = (typeof policyErrorCodes)[number];

/** One located complaint about a policy source; `line` is 1-based and absent when unknown. */
export type PolicyProblem = { readonly file: string; readonly line?: number; readonly message: string };

export type PolicyErrorOptions = { readonly problems?: readonly PolicyProblem[]; readonly cause?: unknown };

/**
 * A bad policy source, bundle or engine state. Misuse by the caller (wrong argument types) is a
 * TypeError instead, so `switch (err.code)` over PolicyErrorCode is exhaustive for domain errors.
 */
export class PolicyError extends Error {
  override readonly name = 'PolicyError';
  readonly code: PolicyErrorCode;
  readonly problems: readonly PolicyProblem[];

  constructor(code: PolicyErrorCode, message: string, options: PolicyErrorOptions = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.code = code;
    this.problems = Object.freeze([...(options.problems ?? [])]);
  }

  /** Builds the error whose message lists every problem as `file:line: message`, one per line. */
  static fromProblems(code: PolicyErrorCode, problems: readonly PolicyProblem[]): PolicyError {
    return new PolicyError(code, problems.map(formatProblem).join('\n'), { problems });
  }
}

export function formatProblem(problem: PolicyProblem): string {
  const where = problem.line === undefined ? problem.file : `${problem.file}:${problem.line}`;
  return `${where}: ${problem.message}`;
}
