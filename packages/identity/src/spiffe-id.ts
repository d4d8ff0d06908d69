/**
 * SPIFFE IDs per the SPIFFE-ID specification, parsed strictly: lower-case scheme and trust domain,
 * no percent-encoding, no userinfo, port, query or fragment, no empty, "." or ".." path segments,
 * no trailing slash. A lookalike (`spiffe://shop.test.evil/…`, `spiffe://SHOP.TEST/…`,
 * `spiffe://shop%2etest/…`) either fails to parse or parses to a different trust domain — it never
 * equals ours. Lockstep names its identities `spiffe://<td>/<kind>/<name>`; `formatSpiffeId` is the
 * one place such a string is built.
 */

/**
 * `svc`: a workload (a service); `admin`: an administrator; `lockstep`: Lockstep's own components
 * (the control plane); `scanner`: an identity issued to `lockstep scan`.
 */
export type SpiffeKind = 'svc' | 'admin' | 'lockstep' | 'scanner';

export const SPIFFE_KINDS: readonly SpiffeKind[] = Object.freeze(['svc', 'admin', 'lockstep', 'scanner']);

export interface SpiffeId {
  readonly id: string;
  readonly trustDomain: string;
  /** "" for the trust domain's own ID (`spiffe://<td>`), else `/segment/…`. */
  readonly path: string;
  /** The kind when the path is exactly `/<kind>/<name>` with a Lockstep kind, else null. */
  readonly kind: SpiffeKind | null;
  /** `<name>` of `/<kind>/<name>`, else null. */
  readonly name: string | null;
  /** `<name>` when the path is `/svc/<name>` (Lockstep's workload naming), else null. */
  readonly service: string | null;
}

const PREFIX = 'spiffe://';
// SPIFFE-ID §2.1: lower-case letters, digits, ".", "-", "_"; at most 255 characters.
const TRUST_DOMAIN = /^[a-z0-9._-]{1,255}$/;
// SPIFFE-ID §2.2: letters, digits, ".", "-", "_" — percent-encoding is not allowed.
const SEGMENT = /^[A-Za-z0-9._-]+$/;
// SPIFFE-ID §2.3: implementations must handle IDs of 2048 bytes; longer ones are not generated.
const MAX_ID_LENGTH = 2048;
const KINDS: ReadonlySet<string> = new Set(SPIFFE_KINDS);

function isSegment(segment: string): boolean {
  return SEGMENT.test(segment) && segment !== '.' && segment !== '..';
}

/** The parsed ID, or null when `value` is not a SPIFFE ID by the letter of the specification. */
export function parseSpiffeId(value: string): SpiffeId | null {
  if (typeof value !== 'string' || value.length > MAX_ID_LENGTH || !value.startsWith(PREFIX)) return null;
  const rest = value.slice(PREFIX.length);
  const slash = rest.indexOf('/');
  const trustDomain = slash === -1 ? rest : rest.slice(0, slash);
  const path = slash === -1 ? '' : rest.slice(slash);
  if (!TRUST_DOMAIN.test(trustDomain)) return null;
  const segments = path === '' ? [] : path.slice(1).split('/');
  if (!segments.every(isSegment)) return null;
  const [first, name] = segments;
  const kind = segments.length === 2 && KINDS.has(first as string) ? (first as SpiffeKind) : null;
  return Object.freeze({
    id: value,
    trustDomain,
    path,
    kind,
    name: kind === null ? null : (name as string),
    service: kind === 'svc' ? (name as string) : null,
  });
}

/**
 * A trust domain Lockstep accepts in its configuration: a SPIFFE trust domain name that also looks
 * like a DNS name (no leading or trailing dot), e.g. "shop.example".
 */
export function isValidTrustDomain(value: string): boolean {
  return typeof value === 'string' && TRUST_DOMAIN.test(value) && !value.startsWith('.') && !value.endsWith('.');
}

function assertTrustDomain(trustDomain: string): void {
  if (!isValidTrustDomain(trustDomain)) {
    throw new TypeError(
      'trust domain must be lower-case letters, digits, ".", "-" or "_" without a scheme or a ' +
        `leading or trailing dot, e.g. "shop.example"; got ${JSON.stringify(trustDomain)}`,
    );
  }
}

/** `spiffe://<td>/<kind>/<name>`; throws a TypeError that says which part is wrong. */
export function formatSpiffeId(trustDomain: string, kind: SpiffeKind, name: string): string {
  assertTrustDomain(trustDomain);
  if (!KINDS.has(kind)) {
    throw new TypeError(`kind must be one of ${SPIFFE_KINDS.join(', ')}; got ${JSON.stringify(kind)}`);
  }
  if (typeof name !== 'string' || !isSegment(name)) {
    throw new TypeError(
      'name must be one SPIFFE path segment (letters, digits, ".", "-", "_"; not "." or ".."), ' +
        `e.g. "orders"; got ${JSON.stringify(name)}`,
    );
  }
  const id = `${PREFIX}${trustDomain}/${kind}/${name}`;
  if (id.length > MAX_ID_LENGTH) {
    throw new TypeError(
      `a SPIFFE ID has at most ${MAX_ID_LENGTH} characters; ${kind}/${name.slice(0, 40)}… ` + `makes ${id.length}`,
    );
  }
  return id;
}

/** A workload's ID, `spiffe://<td>/svc/<service>`. */
export function workloadId(trustDomain: string, service: string): string {
  return formatSpiffeId(trustDomain, 'svc', service);
}

/** The trust domain's own ID, `spiffe://<td>` (no path): what a signing certificate may carry, never a leaf. */
export function trustDomainId(trustDomain: string): string {
  assertTrustDomain(trustDomain);
  return `${PREFIX}${trustDomain}`;
}
