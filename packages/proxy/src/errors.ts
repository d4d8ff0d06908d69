/**
 * The sidecar's own answers, beside the guard's refusals: the guard decides who may call; these say
 * what happened after it allowed the request (the upstream did not answer) or to the app's outbound
 * call on the egress. Inbound answers have the guard's shape exactly — `{"error","requestId"}` and the
 * `lockstep-error` / `lockstep-request-id` headers, no reason (that goes to the log); egress answers
 * go to the app on loopback only, so they also say what to fix.
 */
import type { ServerResponse } from 'node:http';

export const SIDECAR_ERRORS = {
  /** The upstream refused the connection, reset it, or its socket does not exist. */
  LOCKSTEP_ERR_UPSTREAM_UNAVAILABLE: 502,
  /** The upstream did not connect or answer within limits.connectTimeoutMs / headersTimeoutMs. */
  LOCKSTEP_ERR_UPSTREAM_TIMEOUT: 504,
  LOCKSTEP_EGRESS_HOST_REFUSED: 400,
  LOCKSTEP_EGRESS_TARGET_MISSING: 400,
  LOCKSTEP_EGRESS_TARGET_UNKNOWN: 400,
  /** The request target is not a path (`/…`): absolute-form or `//host` would leave for another origin. */
  LOCKSTEP_EGRESS_PATH_INVALID: 400,
  LOCKSTEP_EGRESS_TXN_TOKEN_MISSING: 400,
  LOCKSTEP_EGRESS_BODY_TOO_LARGE: 413,
  /** The server's certificate is not the SVID of the target service (or not trusted): nothing was sent. */
  LOCKSTEP_EGRESS_SERVER_REFUSED: 502,
  LOCKSTEP_EGRESS_UNAVAILABLE: 502,
  LOCKSTEP_EGRESS_TIMEOUT: 504,
} as const;

export type SidecarErrorCode = keyof typeof SIDECAR_ERRORS;

/** An inbound answer after admission, in the guard's refusal shape. */
export function writeUpstreamFailure(
  response: ServerResponse,
  code: 'LOCKSTEP_ERR_UPSTREAM_UNAVAILABLE' | 'LOCKSTEP_ERR_UPSTREAM_TIMEOUT',
  requestId: string,
  head: boolean,
): void {
  if (response.headersSent) {
    response.destroy();
    return;
  }
  const body = JSON.stringify({ error: code, requestId });
  response.writeHead(SIDECAR_ERRORS[code], {
    'content-type': 'application/json; charset=utf-8',
    'content-length': Buffer.byteLength(body),
    'cache-control': 'no-store',
    'lockstep-error': code,
    'lockstep-request-id': requestId,
  });
  response.end(head ? undefined : body);
}

/** An egress answer to the app: the code, and a message that says what to do. */
export function writeEgressError(response: ServerResponse, code: SidecarErrorCode, message: string): void {
  if (response.headersSent) {
    response.destroy();
    return;
  }
  const body = JSON.stringify({ error: code, message });
  response.writeHead(SIDECAR_ERRORS[code], {
    'content-type': 'application/json; charset=utf-8',
    'content-length': Buffer.byteLength(body),
    'lockstep-error': code,
  });
  response.end(body);
}

/** Timeouts are 504, everything else that kept an answer from arriving is 502. */
export function isTimeout(error: unknown): boolean {
  const code = (error as { code?: unknown } | null)?.code;
  return code === 'UND_ERR_CONNECT_TIMEOUT' || code === 'UND_ERR_HEADERS_TIMEOUT' || code === 'UND_ERR_BODY_TIMEOUT';
}
