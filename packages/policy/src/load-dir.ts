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
  return policySetFromFiles(await readPolicyFiles(dir), (name) => join(dir, name));
}

/**
 * The texts of a policy repo's files by bare file name, in name order: what `loadPolicyDir` builds
 * from (and a control plane shares with its replicas). Refuses a directory that cannot be read, a
 * file that cannot be read, and a directory without a `.cedar` file.
 */
export async function readPolicyFiles(dir: string): Promise<Record<string, string>> {
  if (typeof dir !== 'string' || dir === '') throw new TypeError('dir must be a non-empty path');
  let names: string[];
  try {
    const entries = await readdir(dir, { withFileTypes: true });
    names = entries
      .filter((e) => e.isFile() || e.isSymbolicLink())
      .map((e) => e.name)
      .filter((name) => name.endsWith('.cedarschema') || name.endsWith('.cedar'))
      .sort();
  } catch (cause) {
    throw new PolicyError(
      'LOCKSTEP_POLICY_READ',
      `${dir}: cannot read the policy directory (${String(cause)}); check the path`,
      { cause },
    );
  }
  const files: Record<string, string> = {};
  for (const name of names) {
    const file = join(dir, name);
    try {
      files[name] = await readFile(file, 'utf8');
    } catch (cause) {
      throw new PolicyError('LOCKSTEP_POLICY_READ', `${file}: cannot read (${String(cause)}); check its permissions`, {
        cause,
      });
    }
  }
  if (!names.some((name) => name.endsWith('.cedar'))) {
    throw PolicyError.fromProblems('LOCKSTEP_POLICY_EMPTY', [
      { file: dir, message: 'no .cedar file found: add at least one file with @id-annotated policies' },
    ]);
  }
  return files;
}

/** The set of `files` (bare name → text); `named` gives each file the name errors use. */
export function policySetFromFiles(
  files: Readonly<Record<string, string>>,
  named: (name: string) => string = (name) => name,
): PolicySet {
  const schema: Record<string, string> = {};
  const policies: Record<string, string> = {};
  for (const [name, text] of Object.entries(files)) {
    if (name.endsWith('.cedarschema')) schema[named(name)] = text;
    else if (name.endsWith('.cedar')) policies[named(name)] = text;
  }
  return policySetFromSources({ schema, policies });
}
