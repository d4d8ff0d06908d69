import { BASE_SCHEMA_FILE, baseSchemaText } from './base-schema.ts';
import { PolicyError } from './errors.ts';
import { buildPolicySet } from './lib/build-policy-set.ts';
import { mergeSchemaFiles } from './lib/merge-schema.ts';
import type { PolicySet } from './policy-set.ts';

export type PolicySources = {
  /**
   * The user's Cedar schema (actions, extra entities): one text, or texts by file name. The
   * Lockstep base schema is merged in; files are merged in file-name order.
   */
  readonly schema: string | Readonly<Record<string, string>>;
  /** Cedar policy texts by file name; every policy needs a unique `@id("...")`. */
  readonly policies: Readonly<Record<string, string>>;
};

/** The file name errors use when `schema` is given as a single string. */
export const INLINE_SCHEMA_FILE = 'schema.cedarschema';

/**
 * Builds a strictly validated PolicySet from in-memory sources. Errors are PolicyError whose
 * message names `file:line` for every problem.
 */
export function policySetFromSources(sources: PolicySources): PolicySet {
  if (typeof sources !== 'object' || sources === null) throw new TypeError('sources must be { schema, policies }');
  const userSchema = typeof sources.schema === 'string' ? { [INLINE_SCHEMA_FILE]: sources.schema } : sources.schema;
  const schemaFiles = [{ file: BASE_SCHEMA_FILE, text: baseSchemaText }, ...sortedFiles(userSchema, 'schema')];
  const merged = mergeSchemaFiles(schemaFiles);
  if (!merged.ok) {
    throw PolicyError.fromProblems('LOCKSTEP_POLICY_SCHEMA', [{ ...merged.location, message: merged.message }]);
  }
  return buildPolicySet({
    schema: merged.schema,
    policyFiles: sortedFiles(sources.policies, 'policies'),
    service: null,
    allowEmpty: false,
  });
}

function sortedFiles(files: Readonly<Record<string, string>>, what: string): { file: string; text: string }[] {
  if (typeof files !== 'object' || files === null) throw new TypeError(`${what} must be a record of file name to text`);
  return Object.keys(files)
    .sort()
    .map((file) => {
      const text = files[file];
      if (typeof text !== 'string') throw new TypeError(`${what}[${JSON.stringify(file)}] must be a string`);
      return { file, text };
    });
}
