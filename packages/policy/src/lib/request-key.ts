import type { AuthorizationRequest } from '../request-context.ts';

/**
 * The decision-cache key: policy version plus the request in canonical form. Strings are JSON
 * quoted (so no separator can be forged), record keys are sorted, and arrays (always Cedar sets)
 * are sorted and de-duplicated, so requests Cedar cannot tell apart share one key. Keys whose value
 * is undefined are skipped, as Cedar treats them as absent.
 *
 * This runs on every request, hit or miss: a context of exactly the RequestContext shape takes a
 * fast path that allocates nothing but the key string (set members are copied only when unsorted).
 * Both paths produce the same key for the same context.
 */
export function requestKey(version: string, request: AuthorizationRequest): string {
  return `${version}|${quote(request.principal)}|${quote(request.action)}|${quote(request.resource)}|${canonicalContext(request.context)}`;
}

/** JSON.stringify for strings, skipping its cost (≈200 ns here) when nothing needs escaping. */
function quote(value: string): string {
  for (let i = 0; i < value.length; i += 1) {
    const c = value.charCodeAt(i);
    // What JSON.stringify escapes: control characters, quote, backslash, (lone) surrogates.
    if (c < 0x20 || c === 0x22 || c === 0x5c || (c >= 0xd800 && c <= 0xdfff)) return JSON.stringify(value);
  }
  return `"${value}"`;
}

const CONTEXT_KEYS = ['callerService', 'requester', 'roles', 'scope', 'sub', 'tenant'];

function canonicalContext(context: object): string {
  const c = context as Record<string, unknown>;
  for (const key in c) {
    if (c[key] !== undefined && !CONTEXT_KEYS.includes(key)) return canonicalValue(c);
  }
  const { callerService, requester, roles, scope, sub, tenant } = c;
  if (
    typeof callerService !== 'string' ||
    typeof requester !== 'string' ||
    typeof sub !== 'string' ||
    !isStringArray(roles) ||
    !isStringArray(scope) ||
    (tenant !== undefined && typeof tenant !== 'string')
  ) {
    return canonicalValue(c);
  }
  const tenantPart = tenant === undefined ? '' : `,"tenant":${quote(tenant)}`;
  return `{"callerService":${quote(callerService)},"requester":${quote(requester)},"roles":${stringSet(roles)},"scope":${stringSet(scope)},"sub":${quote(sub)}${tenantPart}}`;
}

/** Canonical form of any Cedar JSON value (the slow path; exported for tests). */
export function canonicalValue(value: unknown): string {
  if (value === null) return 'null';
  switch (typeof value) {
    case 'string':
    case 'number':
    case 'boolean':
      return JSON.stringify(value);
    case 'object': {
      if (Array.isArray(value)) {
        if (isStringArray(value)) return stringSet(value);
        return `[${[...new Set((value as unknown[]).map(canonicalValue))].sort().join(',')}]`;
      }
      const record = value as Record<string, unknown>;
      const keys = Object.keys(record)
        .filter((k) => record[k] !== undefined)
        .sort();
      return `{${keys.map((k) => `${JSON.stringify(k)}:${canonicalValue(record[k])}`).join(',')}}`;
    }
    default:
      // Not representable in Cedar: the request fails either way, the tag just keeps keys apart.
      return `<${typeof value}>`;
  }
}

function isStringArray(value: unknown): value is readonly string[] {
  if (!Array.isArray(value)) return false;
  for (let i = 0; i < value.length; i += 1) if (typeof value[i] !== 'string') return false;
  return true;
}

function stringSet(members: readonly string[]): string {
  let sorted = true;
  for (let i = 1; i < members.length && sorted; i += 1) sorted = (members[i - 1] as string) < (members[i] as string);
  const unique = sorted ? members : [...new Set(members)].sort();
  let out = '[';
  for (let i = 0; i < unique.length; i += 1) out += (i ? ',' : '') + quote(unique[i] as string);
  return `${out}]`;
}
