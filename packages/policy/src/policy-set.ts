/** Where a policy was written: the file name as given to the loader and the 1-based line of its first token. */
export type PolicySource = { readonly file: string; readonly line: number };

/**
 * A strictly validated Cedar schema and policy set, identified by a content hash.
 * Built only by policySetFromSources, loadPolicyDir, sliceFor and verifyBundle, and frozen:
 * editing one would make `version` lie about the content.
 */
export type PolicySet = {
  /** sha256 hex of the canonical content, see computePolicySetVersion. */
  readonly version: string;
  /** The service this set was sliced for, or null for the whole set. */
  readonly service: string | null;
  /** The complete schema: the Lockstep base schema merged with the user's schema files. */
  readonly schemaText: string;
  /** Policy text by `@id`. */
  readonly policies: Readonly<Record<string, string>>;
  readonly sources: Readonly<Record<string, PolicySource>>;
};
