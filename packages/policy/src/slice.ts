import * as cedar from '@cedar-policy/cedar-wasm/nodejs';
import { assemblePolicySet } from './lib/assemble-policy-set.ts';
import type { PolicyEntry } from './lib/assemble-policy-set.ts';
import { excludesService } from './lib/resource-scope.ts';
import type { PolicySet } from './policy-set.ts';

/**
 * The slice of `set` for one service: every policy, permit or forbid, except those whose resource
 * scope or conditions provably exclude `Lockstep::Service::"<service>"`. Conservative: a policy
 * the analysis does not understand is kept, so a slice decides exactly like the whole set for that
 * service. The slice has its own version (its content plus the service name).
 */
export function sliceFor(set: PolicySet, service: string): PolicySet {
  if (typeof service !== 'string' || service === '') throw new TypeError('service must be a non-empty service name');
  if (set.service !== null && set.service !== service) {
    throw new TypeError(
      `this set is already the slice for ${JSON.stringify(set.service)}: slice the whole set instead`,
    );
  }
  const kept: PolicyEntry[] = [];
  for (const [id, text] of Object.entries(set.policies)) {
    const json = cedar.policyToJson(text);
    // A set that passed validation always parses; if not, keeping the policy is the safe choice.
    if (json.type === 'success' && excludesService(json.json, service)) continue;
    const source = Object.hasOwn(set.sources, id)
      ? (set.sources[id] as PolicySet['sources'][string])
      : { file: '(unknown)', line: 1 };
    kept.push({ id, text, source });
  }
  return assemblePolicySet(set.schemaText, service, kept);
}
