/**
 * SPIFFE ID parsing per the SPIFFE-ID specification, strictly: lower-case scheme and trust domain,
 * no percent-encoding, no userinfo, port, query or fragment, no empty, "." or ".." path segments.
 * A lookalike (`spiffe://shop.test.evil/…`, `spiffe://SHOP.TEST/…`, `spiffe://shop%2etest/…`) either
 * fails to parse or parses to a different trust domain — it never equals ours.
 */
export interface SpiffeId {
  readonly id: string;
  readonly trustDomain: string;
  readonly path: string;
  /** `<name>` when the path is `/svc/<name>` (Lockstep's workload naming), else null. */
  readonly service: string | null;
}

const TRUST_DOMAIN = /^[a-z0-9._-]{1,255}$/;
const SEGMENT = /^[A-Za-z0-9._-]+$/;
const PREFIX = 'spiffe://';

export function parseSpiffeId(value: string): SpiffeId | null {
  if (value.length > 2048 || !value.startsWith(PREFIX)) return null;
  const rest = value.slice(PREFIX.length);
  const slash = rest.indexOf('/');
  const trustDomain = slash === -1 ? rest : rest.slice(0, slash);
  const path = slash === -1 ? '' : rest.slice(slash);
  if (!TRUST_DOMAIN.test(trustDomain)) return null;
  if (path !== '') {
    const segments = path.slice(1).split('/');
    for (const segment of segments) {
      if (!SEGMENT.test(segment) || segment === '.' || segment === '..') return null;
    }
  }
  const match = /^\/svc\/([A-Za-z0-9._-]+)$/.exec(path);
  return Object.freeze({ id: value, trustDomain, path, service: match?.[1] ?? null });
}

export function isValidTrustDomain(value: string): boolean {
  return TRUST_DOMAIN.test(value) && !value.startsWith('.') && !value.endsWith('.');
}
