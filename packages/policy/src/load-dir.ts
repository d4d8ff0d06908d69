import { readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { PolicyError } from './errors.ts';
import { policySetFromSources } from './from-sources.ts';
import type { PolicySet } from './policy-set.ts';

/**
 * Loads a policy repo: every `*.cedarschema` and `*.cedar` file directly in `dir`, not in
 * subdirectories (those are free for policy tests and docs). Files are read in name order and
 * named in errors as `join(dir, name)`, so `loadPolicyDir('policies')` reports
 * `policies/orders.cedar:12: ...`.
 */
export async function loadPolicyDir(dir: string): Promise<PolicySet> {
  if (typeof dir !== 'string' || dir === '') throw new TypeError('dir must be a non-empty path');
  let names: string[];
  try {
    const entries = await readdir(dir, { withFileTypes: true });
    names = entries
      .filter((e) => e.isFile() || e.isSymbolicLink())
      .map((e) => e.name)
      .sort();
  } catch (cause) {
    throw new PolicyError(
      'LOCKSTEP_POLICY_READ',
      `${dir}: cannot read the policy directory (${String(cause)}); check the path`,
      { cause },
    );
  }
  const schema: Record<string, string> = {};
  const policies: Record<string, string> = {};
  for (const name of names) {
    const target = name.endsWith('.cedarschema') ? schema : name.endsWith('.cedar') ? policies : undefined;
    if (!target) continue;
    const file = join(dir, name);
    try {
      target[file] = await readFile(file, 'utf8');
    } catch (cause) {
      throw new PolicyError('LOCKSTEP_POLICY_READ', `${file}: cannot read (${String(cause)}); check its permissions`, {
        cause,
      });
    }
  }
  if (Object.keys(policies).length === 0) {
    throw PolicyError.fromProblems('LOCKSTEP_POLICY_EMPTY', [
      { file: dir, message: 'no .cedar file found: add at least one file with @id-annotated policies' },
    ]);
  }
  return policySetFromSources({ schema, policies });
}
