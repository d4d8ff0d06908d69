import { PolicyError } from '../errors.ts';

/** JWS header values of a policy bundle. */
export const BUNDLE_ALG = 'ES256';
export const BUNDLE_TYP = 'lockstep-policy+jws';

export type BundlePayload = {
  readonly v: 1;
  readonly version: string;
  readonly service: string | null;
  readonly schema: string;
  readonly policies: Readonly<Record<string, string>>;
  readonly iat: number;
};

/** Decodes and shape-checks a verified payload; content checks (version, validation) come after. */
export function parseBundlePayload(bytes: Uint8Array): BundlePayload {
  let payload: unknown;
  try {
    payload = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(bytes));
  } catch (cause) {
    throw invalid('payload is not UTF-8 JSON', cause);
  }
  if (typeof payload !== 'object' || payload === null || Array.isArray(payload))
    throw invalid('payload is not an object');
  const p = payload as Record<string, unknown>;
  if (p['v'] !== 1) throw invalid(`unsupported payload version v=${JSON.stringify(p['v'])} (expected 1)`);
  if (typeof p['version'] !== 'string' || !/^[0-9a-f]{64}$/.test(p['version']))
    throw invalid('"version" must be a sha256 hex string');
  if (p['service'] !== null && (typeof p['service'] !== 'string' || p['service'] === ''))
    throw invalid('"service" must be a service name or null');
  if (typeof p['schema'] !== 'string') throw invalid('"schema" must be a string');
  if (!Number.isSafeInteger(p['iat']) || (p['iat'] as number) < 0)
    throw invalid('"iat" must be a unix time in seconds');
  const policies = p['policies'];
  if (typeof policies !== 'object' || policies === null || Array.isArray(policies))
    throw invalid('"policies" must be an object');
  for (const [id, text] of Object.entries(policies)) {
    if (typeof text !== 'string') throw invalid(`policy ${JSON.stringify(id)} must be a string`);
  }
  return {
    v: 1,
    version: p['version'],
    service: p['service'],
    schema: p['schema'],
    policies: policies as Record<string, string>,
    iat: p['iat'] as number,
  };
}

export function invalid(reason: string, cause?: unknown): PolicyError {
  return new PolicyError(
    'LOCKSTEP_POLICY_BUNDLE_INVALID',
    `policy bundle rejected: ${reason}; fetch a fresh bundle from the control plane`,
    cause === undefined ? {} : { cause },
  );
}
