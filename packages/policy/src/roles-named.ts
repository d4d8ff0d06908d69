import * as cedar from '@cedar-policy/cedar-wasm/nodejs';
import type { PolicySet } from './policy-set.ts';

/**
 * The roles a policy set tests for: every string literal in `context.roles.contains("…")`,
 * `containsAll([…])` and `containsAny([…])`, sorted. `complete` is false when the set reads
 * `context.roles` in any other way (compared with an attribute, `isEmpty()`…): then a role outside
 * `roles` may still matter, and nobody should call it unknown. Read from Cedar's own JSON form of each
 * policy, never from the text.
 */
export function rolesNamed(set: PolicySet): { readonly roles: readonly string[]; readonly complete: boolean } {
  const roles = new Set<string>();
  let complete = true;
  for (const text of Object.values(set.policies)) {
    const json = cedar.policyToJson(text);
    if (json.type !== 'success') {
      complete = false;
      continue;
    }
    const reads = { all: 0, understood: 0 };
    visit(json.json.conditions, roles, reads);
    if (reads.all !== reads.understood) complete = false;
  }
  return { roles: [...roles].sort(), complete };
}

const SET_TESTS = ['contains', 'containsAll', 'containsAny'];

/** `{ ".": { left: { Var: "context" }, attr: "roles" } }` */
function isContextRoles(node: unknown): boolean {
  const access = (node as { '.'?: { left?: { Var?: unknown }; attr?: unknown } } | null)?.['.'];
  return access?.attr === 'roles' && access.left?.Var === 'context';
}

/** The string literals of `{ Value: "a" }` or `{ Set: [{ Value: "a" }, …] }`, or null for anything else. */
function literals(node: unknown): string[] | null {
  const value = (node as { Value?: unknown } | null)?.Value;
  if (typeof value === 'string') return [value];
  const items = (node as { Set?: unknown } | null)?.Set;
  if (!Array.isArray(items)) return null;
  const strings = items.map((item: unknown) => (item as { Value?: unknown } | null)?.Value);
  return strings.every((item) => typeof item === 'string') ? (strings as string[]) : null;
}

function visit(node: unknown, roles: Set<string>, reads: { all: number; understood: number }): void {
  if (typeof node !== 'object' || node === null) return;
  if (Array.isArray(node)) {
    for (const item of node) visit(item, roles, reads);
    return;
  }
  if (isContextRoles(node)) reads.all += 1;
  for (const test of SET_TESTS) {
    const call = (node as Record<string, { left?: unknown; right?: unknown } | undefined>)[test];
    if (call === undefined || !isContextRoles(call.left)) continue;
    const named = literals(call.right);
    if (named === null) continue;
    reads.understood += 1;
    for (const role of named) roles.add(role);
  }
  for (const child of Object.values(node)) visit(child, roles, reads);
}
