import { createHash } from 'node:crypto';

export type PolicySetContent = {
  readonly schemaText: string;
  readonly policies: Readonly<Record<string, string>>;
  readonly service: string | null;
};

const FORMAT = 'lockstep-policy-set/1';

/**
 * The version of a policy set: sha256 hex over a JSON array of the format tag, the schema text,
 * the service (null for the whole set) and the [id, text] pairs sorted by id. JSON string
 * escaping keeps the fields unambiguous; sorting makes file layout and key order irrelevant.
 */
export function computePolicySetVersion(content: PolicySetContent): string {
  const ids = Object.keys(content.policies).sort();
  const pairs = ids.map((id) => [id, content.policies[id]]);
  const canonical = JSON.stringify([FORMAT, content.schemaText, content.service, pairs]);
  return createHash('sha256').update(canonical, 'utf8').digest('hex');
}
