import * as cedar from '@cedar-policy/cedar-wasm/nodejs';
import { channel } from 'node:diagnostics_channel';
import { PolicyError } from './errors.ts';
import { DecisionCache } from './lib/decision-cache.ts';
import { describeCedarError } from './lib/describe-cedar-error.ts';
import { evaluateRequest } from './lib/evaluate-request.ts';
import { requestKey } from './lib/request-key.ts';
import type { PolicySet } from './policy-set.ts';
import type { AuthorizationRequest } from './request-context.ts';
import { computePolicySetVersion } from './version.ts';

export type PolicyEngineOptions = {
  /** Maximum cached decisions (LRU); 0 disables the cache. Default 10 000. */
  readonly cacheSize?: number;
  /** The decision cache's budget in estimated bytes (lib/decision-cache.ts). Default 4 MiB. */
  readonly cacheBytes?: number;
};

export type AuthorizationResult = {
  readonly decision: 'allow' | 'deny';
  /** `@id`s of the policies that determined the decision (permits for allow, forbids for deny). */
  readonly policyIds: readonly string[];
  /** Request validation and policy evaluation errors; any of them means the request was not allowed by that policy. */
  readonly errors: readonly string[];
  /** Version of the policy set that decided. */
  readonly version: string;
  readonly cached: boolean;
};

export type PolicyEngineStats = {
  readonly hits: number;
  readonly misses: number;
  readonly size: number;
  /** The decision cache's estimated bytes. */
  readonly bytes: number;
};

export type PolicyEngine = {
  /** Version of the active policy set, null before the first load. */
  readonly version: string | null;
  /** Makes `set` the active policy set, or throws and leaves the previous one active. */
  load(set: PolicySet): void;
  authorize(request: AuthorizationRequest): AuthorizationResult;
  stats(): PolicyEngineStats;
};

/** Published after every successful load: { version, service, previousVersion }. */
export const policyAppliedChannel = channel('lockstep:policy:applied');

type ActiveSet = { readonly version: string; readonly service: string | null };

/**
 * Evaluates requests with Cedar against one active policy set, caching decisions per
 * (policy version, canonical request). Loading preparses schema and policies under the set's
 * version; only then does one reference swap make the new set active.
 */
export function createPolicyEngine(options: PolicyEngineOptions = {}): PolicyEngine {
  const cacheSize = options.cacheSize ?? 10_000;
  if (!Number.isSafeInteger(cacheSize) || cacheSize < 0)
    throw new TypeError('options.cacheSize must be a non-negative integer');
  const cacheBytes = options.cacheBytes ?? 4 * 1024 * 1024;
  if (!Number.isSafeInteger(cacheBytes) || cacheBytes < 1)
    throw new TypeError('options.cacheBytes must be a positive integer');
  const cache = new DecisionCache<AuthorizationResult>(cacheSize, cacheBytes);
  let active: ActiveSet | null = null;
  let hits = 0;
  let misses = 0;

  function load(set: PolicySet): void {
    if (
      typeof set !== 'object' ||
      set === null ||
      typeof set.schemaText !== 'string' ||
      typeof set.policies !== 'object'
    ) {
      throw new TypeError('load() expects a PolicySet');
    }
    const version = computePolicySetVersion(set);
    if (version !== set.version) {
      throw new PolicyError(
        'LOCKSTEP_POLICY_LOAD',
        `policy set ${set.version} does not match its content (${version}): build sets with policySetFromSources, loadPolicyDir, sliceFor or verifyBundle and never edit them`,
      );
    }
    // The wasm module keeps preparsed entries by name; a name is a content hash, so re-preparsing
    // the active version writes identical content and never disturbs requests in flight.
    const schema = cedar.preparseSchema(version, set.schemaText);
    if (schema.type === 'failure') throw loadFailure(version, 'schema', schema.errors);
    const policies = cedar.preparsePolicySet(version, { staticPolicies: { ...set.policies } });
    if (policies.type === 'failure') throw loadFailure(version, 'policies', policies.errors);

    const previous = active;
    active = Object.freeze({ version, service: set.service });
    cache.clear();
    if (policyAppliedChannel.hasSubscribers) {
      policyAppliedChannel.publish({ version, service: set.service, previousVersion: previous?.version ?? null });
    }
  }

  function authorize(request: AuthorizationRequest): AuthorizationResult {
    const current = active;
    if (current === null) {
      throw new PolicyError(
        'LOCKSTEP_POLICY_NOT_LOADED',
        'no policy set loaded: load() a verified bundle first; until then the service cannot decide',
      );
    }
    if (
      typeof request?.principal !== 'string' ||
      typeof request.action !== 'string' ||
      typeof request.resource !== 'string' ||
      typeof request.context !== 'object' ||
      request.context === null
    ) {
      throw new TypeError('authorize() expects { principal, action, resource: string, context: RequestContext }');
    }
    if (current.service !== null && request.resource !== current.service) {
      // A slice leaves out policies of other services (forbids included): it cannot decide for them.
      return Object.freeze({
        decision: 'deny',
        policyIds: Object.freeze([]),
        errors: Object.freeze([
          `policy set ${current.version} is the slice for ${JSON.stringify(current.service)}, not ${JSON.stringify(request.resource)}`,
        ]),
        version: current.version,
        cached: false,
      });
    }

    const key = requestKey(current.version, request);
    const hit = cache.get(key);
    if (hit !== undefined) {
      hits += 1;
      return hit;
    }
    misses += 1;
    const { decision, policyIds, errors, cacheable } = evaluateRequest(current.version, request);
    const result: AuthorizationResult = Object.freeze({
      decision,
      policyIds,
      errors,
      version: current.version,
      cached: false,
    });
    if (cacheable) cache.set(key, Object.freeze({ ...result, cached: true }));
    return result;
  }

  return Object.freeze({
    get version() {
      return active?.version ?? null;
    },
    load,
    authorize,
    stats: () => Object.freeze({ hits, misses, size: cache.size, bytes: cache.bytes }),
  });
}

function loadFailure(version: string, what: string, errors: readonly cedar.DetailedError[]): PolicyError {
  const reasons = errors.map(describeCedarError).join('; ');
  return new PolicyError(
    'LOCKSTEP_POLICY_LOAD',
    `policy set ${version} not loaded, the previous set stays active: ${what} rejected by Cedar (${reasons})`,
  );
}
