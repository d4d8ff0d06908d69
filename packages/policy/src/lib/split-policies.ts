import { scanCedar } from './scan-cedar.ts';

/** One policy statement of a .cedar file: its verbatim text (annotations through `;`) and offset. */
export type PolicyStatement = { readonly text: string; readonly start: number };

export type SplitResult =
  | { readonly ok: true; readonly statements: readonly PolicyStatement[] }
  | { readonly ok: false; readonly offset: number; readonly message: string };

/**
 * Cuts a policy file at each top-level `;`. Cedar has no `;` inside a policy outside strings and
 * comments, so this is exact; the caller cross-checks the result with Cedar's own
 * `policySetTextToParts`, which returns the same verbatim texts but not their positions.
 */
export function splitPolicies(text: string): SplitResult {
  const scanned = scanCedar(text);
  if (!scanned.ok) return scanned;
  const statements: PolicyStatement[] = [];
  let first: number | undefined;
  for (const token of scanned.tokens) {
    first ??= token.start;
    if (token.kind === 'punct' && token.text === ';') {
      statements.push({ text: text.slice(first, token.end), start: first });
      first = undefined;
    }
  }
  if (first !== undefined) statements.push({ text: text.slice(first).trimEnd(), start: first });
  return { ok: true, statements };
}
