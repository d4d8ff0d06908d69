/**
 * The client certificate as each fronting proxy forwards it — only unwrapped here, never trusted:
 * the decision pipeline verifies the chain against the trust bundle and reads the identity from its
 * DER. A header that cannot be unwrapped is `malformed` (refused as an invalid identity), never "no
 * certificate" (which would hide an attack as an ordinary 401).
 *
 *   nginx    `proxy_set_header X-Client-Cert $ssl_client_escaped_cert;` — URL-encoded PEM (leaf)
 *   Traefik  `X-Forwarded-Tls-Client-Cert` (passTLSClientCert pem: true) — URL-encoded base64 DER
 *            of each certificate without PEM armour or line breaks, separated by commas
 *   Envoy    `x-forwarded-client-cert` (XFCC) — `;`-separated `Key=Value` pairs per element, elements
 *            separated by commas; `Chain="…"` or `Cert="…"` is URL-encoded PEM. One element only, by
 *            default: "the last element is the nearest proxy's" is false under APPEND_FORWARD when
 *            the client presented no certificate (Envoy appends nothing, and the last element is then
 *            one the client wrote). Envoy must run `forward_client_cert_details: SANITIZE_SET`.
 *   Envoy    gRPC ext_authz: `attributes.source.certificate` (`include_peer_certificate: true`) — URL-encoded
 *            PEM of the client's leaf, from Envoy's own TLS state (no header a client could write).
 */
import type { PresentedChain } from '@lockstep/guard';

export type ForwardedCertificate = { readonly chain: PresentedChain } | 'absent' | 'malformed';

/** The header's one value (pass `request.headersDistinct[name]`: Node joins repeats of most headers). */
function single(header: string | readonly string[] | undefined): string | undefined | null {
  const value = typeof header === 'string' || header === undefined ? header : header.length === 1 ? header[0] : null;
  if (value === undefined || value === '') return undefined;
  return value; // null: sent twice, and which one would count?
}

function urlDecoded(text: string): string | null {
  try {
    return decodeURIComponent(text);
  } catch {
    return null;
  }
}

/** URL-encoded PEM; `malformed` when it does not decode to PEM text. */
function urlEncodedPem(value: string): ForwardedCertificate {
  const pem = urlDecoded(value);
  return pem === null || !pem.includes('-----BEGIN CERTIFICATE-----') ? 'malformed' : { chain: pem };
}

/** nginx's `$ssl_client_escaped_cert`: the URL-encoded PEM of the client's leaf. */
export function fromNginxHeader(header: string | readonly string[] | undefined): ForwardedCertificate {
  const value = single(header);
  if (value === undefined) return 'absent';
  return value === null ? 'malformed' : urlEncodedPem(value);
}

/** Envoy's gRPC `AttributeContext.Peer.certificate` (`''` when the client presented none): URL-encoded PEM. */
export function fromEnvoyPeerCertificate(value: string): ForwardedCertificate {
  return value === '' ? 'absent' : urlEncodedPem(value);
}

const BASE64 = /^[A-Za-z0-9+/]+={0,2}$/;

/** Traefik's `X-Forwarded-Tls-Client-Cert`: URL-encoded, comma-separated base64 DER certificates. */
export function fromTraefikHeader(header: string | readonly string[] | undefined): ForwardedCertificate {
  const value = single(header);
  if (value === undefined) return 'absent';
  const decoded = value === null ? null : urlDecoded(value);
  if (decoded === null) return 'malformed';
  const parts = decoded.split(',').map((part) => part.replace(/-----(BEGIN|END) CERTIFICATE-----|\s/g, ''));
  if (parts.some((part) => !BASE64.test(part))) return 'malformed';
  return { chain: parts.map((part) => new Uint8Array(Buffer.from(part, 'base64'))) };
}

/**
 * Envoy's `x-forwarded-client-cert`: the element's `Chain` (else `Cert`). Values may be quoted;
 * a quoted value may hold `,` and `;`, and `\"` for a quote (Envoy's own escaping). More than one
 * element is `malformed` unless `lastOfMany` (every proxy on the way requires a client certificate,
 * so the last element is always the nearest proxy's): which element was written by whom is unknowable.
 */
export function fromXfccHeader(
  header: string | readonly string[] | undefined,
  lastOfMany = false,
): ForwardedCertificate {
  const value = single(header);
  if (value === undefined) return 'absent';
  if (value === null) return 'malformed';
  const elements = splitElements(value);
  if (elements === null) return 'malformed';
  if (elements.length > 1 && !lastOfMany) return 'malformed';
  const last = elements.at(-1) ?? new Map<string, string>();
  const encoded = last.get('chain') ?? last.get('cert');
  return encoded === undefined ? 'absent' : urlEncodedPem(encoded);
}

/** XFCC elements as maps of lower-cased keys to values; null when the header does not parse. */
function splitElements(header: string): Map<string, string>[] | null {
  const elements: Map<string, string>[] = [];
  let pairs = new Map<string, string>();
  let at = 0;
  while (at < header.length) {
    const equals = header.indexOf('=', at);
    if (equals < 0) return null;
    const key = header.slice(at, equals).trim().toLowerCase();
    let valueText = '';
    let next = equals + 1;
    if (header[next] === '"') {
      next++;
      while (next < header.length && header[next] !== '"') {
        if (header[next] === '\\' && next + 1 < header.length) next++;
        valueText += header[next];
        next++;
      }
      if (header[next] !== '"') return null;
      next++;
    } else {
      while (next < header.length && header[next] !== ';' && header[next] !== ',') valueText += header[next++];
    }
    if (pairs.has(key)) return null;
    pairs.set(key, valueText);
    while (header[next] === ' ') next++;
    if (next < header.length && header[next] !== ';' && header[next] !== ',') return null;
    if (header[next] === ',' || next >= header.length) {
      elements.push(pairs);
      pairs = new Map();
    }
    at = next + 1;
  }
  // A last element ended by `;` is still an element: malformed or not, never "absent".
  if (pairs.size > 0) elements.push(pairs);
  return elements;
}
