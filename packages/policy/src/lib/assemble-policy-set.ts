import type { PolicySet, PolicySource } from '../policy-set.ts';
import { computePolicySetVersion } from '../version.ts';

export type PolicyEntry = { readonly id: string; readonly text: string; readonly source: PolicySource };

/** Computes the version and freezes everything, so a set can never drift from its version. */
export function assemblePolicySet(
  schemaText: string,
  service: string | null,
  entries: readonly PolicyEntry[],
): PolicySet {
  const sorted = [...entries].sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
  // Object.fromEntries defines own properties, so an id such as "__proto__" stays an ordinary key.
  const policies = Object.freeze(Object.fromEntries(sorted.map((e) => [e.id, e.text])));
  const sources = Object.freeze(
    Object.fromEntries(sorted.map((e) => [e.id, Object.freeze({ file: e.source.file, line: e.source.line })])),
  );
  const version = computePolicySetVersion({ schemaText, policies, service });
  return Object.freeze({ version, service, schemaText, policies, sources });
}
