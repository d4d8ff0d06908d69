/**
 * The one error catalogue of the guard. Every rejection the guard makes carries exactly one of these
 * codes: the HTTP status comes from this table, the response body carries only the code and the
 * request id, and the audit event carries the code as its reason.
 */
import { STATUS_CODES } from 'node:http';

export const errorCatalogue = {
  LOCKSTEP_ERR_PEER_CERT_MISSING: {
    status: 401,
    summary: 'The caller presented no client certificate (mTLS is required).',
  },
  LOCKSTEP_ERR_PEER_UNTRUSTED: {
    status: 401,
    summary: 'The client certificate does not chain to the trust bundle, or is expired or not yet valid.',
  },
  LOCKSTEP_ERR_PEER_ID_INVALID: {
    status: 401,
    summary: 'The client certificate is not a valid X.509-SVID (one URI SAN, CA=false, well-formed SPIFFE ID).',
  },
  LOCKSTEP_ERR_PEER_FOREIGN_TRUST_DOMAIN: {
    status: 401,
    summary: "The caller's SPIFFE ID belongs to another trust domain.",
  },
  LOCKSTEP_ERR_TLS_HANDSHAKE: {
    status: 400,
    summary:
      'The TLS handshake failed (for example plain HTTP sent to the TLS port); the connection is closed without an HTTP answer.',
  },
  LOCKSTEP_ERR_PEER_REVOKED: { status: 401, summary: "The caller's SPIFFE ID has been revoked." },
  LOCKSTEP_ERR_TXN_TOKEN_MISSING: { status: 401, summary: 'No Txn-Token header on a route that requires one.' },
  LOCKSTEP_ERR_TXN_TOKEN_DUPLICATE: { status: 401, summary: 'More than one Txn-Token header.' },
  LOCKSTEP_ERR_TXN_TOKEN_MALFORMED: {
    status: 401,
    summary: 'The Txn-Token is not a compact JWS of acceptable size and shape.',
  },
  LOCKSTEP_ERR_TXN_TOKEN_INVALID: {
    status: 401,
    summary: 'The Txn-Token JOSE header or signature is not acceptable (algorithm, key id, extra header parameters).',
  },
  LOCKSTEP_ERR_TXN_TOKEN_EXPIRED: { status: 401, summary: 'The Txn-Token has expired.' },
  LOCKSTEP_ERR_TXN_TOKEN_CLAIMS: {
    status: 401,
    summary:
      'The Txn-Token claims are not acceptable (typ, aud, lifetime, iat/nbf, required claims, control characters).',
  },
  LOCKSTEP_ERR_TXN_TOKEN_REVOKED: {
    status: 401,
    summary: 'The Txn-Token, its subject, its transaction or its signing key has been revoked.',
  },
  LOCKSTEP_ERR_DENIED: { status: 403, summary: 'The policy does not permit this caller to perform this action.' },
  LOCKSTEP_ERR_ROUTE_UNKNOWN: { status: 404, summary: 'No route matches; the request was authenticated and refused.' },
  LOCKSTEP_ERR_INPUT_INVALID: {
    status: 400,
    summary:
      'The request is malformed, or its body is not strict JSON (duplicate or prototype keys, control ' +
      "characters), does not match the route's schema, or comes on a route that takes none.",
  },
  LOCKSTEP_ERR_BODY_TOO_LARGE: { status: 413, summary: 'The request body exceeds the limit.' },
  LOCKSTEP_ERR_UNSUPPORTED_MEDIA_TYPE: {
    status: 415,
    summary: 'The request body has a content type the route does not accept.',
  },
  LOCKSTEP_ERR_HEADERS_TOO_LARGE: { status: 431, summary: 'The request headers exceed the limit.' },
  LOCKSTEP_ERR_PROBE_INVALID: {
    status: 400,
    summary:
      'A scanner probe named, in Lockstep-Probe-As or Lockstep-Probe-Requester, something other than a workload of this trust domain.',
  },
  LOCKSTEP_ERR_NO_POLICY: { status: 503, summary: 'The service cannot decide yet: no policy bundle has been applied.' },
  LOCKSTEP_ERR_UPSTREAM_UNAVAILABLE: {
    status: 502,
    summary:
      'The request was admitted, but the service behind a guard in front of another server (the sidecar) refused the connection, reset it or is not there.',
  },
  LOCKSTEP_ERR_UPSTREAM_TIMEOUT: {
    status: 504,
    summary:
      'The request was admitted, but the service behind the sidecar did not connect or answer within its limits.',
  },
  LOCKSTEP_ERR_INTERNAL: {
    status: 500,
    summary:
      'The guard failed while deciding (the request was refused), or a node:http handler failed before ' + 'answering.',
  },
} as const satisfies Record<string, { status: number; summary: string }>;

export type GuardErrorCode = keyof typeof errorCatalogue;

export const errorCodes = Object.keys(errorCatalogue) as GuardErrorCode[];

export function statusOf(code: GuardErrorCode): number {
  return errorCatalogue[code].status;
}

/** A request the guard refuses. `detail` goes to the audit event and the logs, never to the caller. */
export class GuardError extends Error {
  readonly code: GuardErrorCode;
  readonly status: number;
  readonly detail: string;
  /** The policies that decided a denial (forbid policies), when any did. */
  readonly policyIds: readonly string[];
  /** The version of the policy that decided a denial: the audit event records it like an allow's. */
  readonly policyVersion: string | null;

  constructor(
    code: GuardErrorCode,
    detail: string = errorCatalogue[code].summary,
    policyIds: readonly string[] = [],
    policyVersion: string | null = null,
  ) {
    super(`${code}: ${detail}`);
    this.name = 'GuardError';
    this.code = code;
    this.status = errorCatalogue[code].status;
    this.detail = detail;
    this.policyIds = policyIds;
    this.policyVersion = policyVersion;
  }
}

/** A refusal also names its code in this header: a HEAD answer has no body. */
export const ERROR_HEADER = 'lockstep-error';
/** …and its request id (`lockstep explain <id>`), for the same reason. */
export const REQUEST_ID_HEADER = 'lockstep-request-id';

/** The only body the caller ever sees for a refusal. */
export function errorBody(code: GuardErrorCode, requestId: string): string {
  return `{"error":"${code}","requestId":${JSON.stringify(requestId)}}`;
}

/** A refusal as the caller receives it. Adapters write exactly this and nothing else. */
export interface RefusalResponse {
  readonly status: number;
  readonly headers: Readonly<Record<string, string>>;
  /** Empty for a HEAD request: the headers still carry the code and the request id. */
  readonly body: string;
}

export interface RefusalOptions {
  /** The request was HEAD: no body is sent (the content-length is still that of the body). */
  readonly head?: boolean;
  /**
   * Close the connection after the answer: the request's body was not read (so the next bytes on the
   * connection are not a request), or the request could not be parsed at all.
   */
  readonly close?: boolean;
}

/**
 * The one function that turns a refusal into a response — status, headers, body — for every
 * adapter, the raw-socket paths (client errors, CONNECT) and framework errors alike: a new way in
 * cannot invent its own answer (linkerd2-proxy's one rescue function is the model).
 */
export function renderRefusal(code: GuardErrorCode, requestId: string, options: RefusalOptions = {}): RefusalResponse {
  const body = errorBody(code, requestId);
  const headers: Record<string, string> = {
    'content-type': 'application/json; charset=utf-8',
    'content-length': String(Buffer.byteLength(body)),
    'cache-control': 'no-store',
    [ERROR_HEADER]: code,
    [REQUEST_ID_HEADER]: requestId,
  };
  if (options.close === true) headers.connection = 'close';
  return { status: statusOf(code), headers, body: options.head === true ? '' : body };
}

/** A rendered refusal as the bytes of an HTTP/1.1 response, for the paths that own the raw socket. */
export function refusalBytes(refusal: RefusalResponse): string {
  const lines = [`HTTP/1.1 ${refusal.status} ${STATUS_CODES[refusal.status] ?? ''}`];
  for (const [name, value] of Object.entries(refusal.headers)) lines.push(`${name}: ${value}`);
  return `${lines.join('\r\n')}\r\n\r\n${refusal.body}`;
}

/** Misuse of the guard by the service author: bad options, wrong call order. */
export class GuardConfigError extends TypeError {
  readonly code = 'LOCKSTEP_CONFIG_INVALID';
  constructor(message: string) {
    super(message);
    this.name = 'GuardConfigError';
  }
}
