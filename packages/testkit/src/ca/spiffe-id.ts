// Only the well-formed identities the CA hands out on purpose, by the rules of @lockstep/identity;
// bad ones go through issueCert.
import { isValidTrustDomain, workloadId } from '@lockstep/identity';

export function assertTrustDomain(trustDomain: string): void {
  if (!isValidTrustDomain(trustDomain)) {
    throw new TypeError(
      'trustDomain must be lowercase letters, digits, ".", "-" or "_" without a leading or ' +
        `trailing dot (e.g. "shop.test"); got ${JSON.stringify(trustDomain)}`,
    );
  }
}

export function serviceSpiffeId(trustDomain: string, service: string): string {
  try {
    return workloadId(trustDomain, service);
  } catch (error) {
    throw new TypeError(`${(error as Error).message}. Use issueCert({ uris }) to craft malformed IDs.`);
  }
}
