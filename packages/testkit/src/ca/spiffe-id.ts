// Only the well-formed identities the CA hands out on purpose; bad ones go through issueCert.
const TRUST_DOMAIN = /^[a-z0-9._-]+$/;
const PATH_SEGMENT = /^[A-Za-z0-9._-]+$/;

export function assertTrustDomain(trustDomain: string): void {
  if (!TRUST_DOMAIN.test(trustDomain)) {
    throw new TypeError(`trustDomain must be lowercase letters, digits, ".", "-" or "_" (e.g. "shop.test"); got ${JSON.stringify(trustDomain)}`);
  }
}

export function serviceSpiffeId(trustDomain: string, service: string): string {
  if (!PATH_SEGMENT.test(service) || service === '.' || service === '..') {
    throw new TypeError(`service must be one SPIFFE path segment (letters, digits, ".", "-", "_"), e.g. "orders"; got ${JSON.stringify(service)}. Use issueCert({ uris }) to craft malformed IDs.`);
  }
  return `spiffe://${trustDomain}/svc/${service}`;
}
