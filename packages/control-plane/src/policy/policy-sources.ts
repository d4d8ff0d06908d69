/**
 * A policy directory read as `@lockstep/policy`'s loadPolicyDir reads it (the same files, checks and
 * errors, which name `dir/file:line`), keeping the texts too: shared mode publishes them, by bare file
 * name, so that every replica builds the same set from them whatever its own directory is called.
 * The version does not depend on the directory: it hashes the content, and files keep their order.
 */
import { join } from 'node:path';
import { policySetFromFiles, readPolicyFiles, type PolicySet } from '@lockstep/policy';

export interface DirectoryPolicy {
  readonly set: PolicySet;
  /** `*.cedarschema` and `*.cedar` texts by file name (no directory). */
  readonly sources: Readonly<Record<string, string>>;
}

export async function readPolicyDirectory(dir: string): Promise<DirectoryPolicy> {
  const sources = await readPolicyFiles(dir);
  return { set: policySetFromFiles(sources, (name) => join(dir, name)), sources };
}
