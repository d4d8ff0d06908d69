/**
 * The egress's own answers to the app's outbound calls. They go to the app on loopback only, so they
 * say what to fix. Inbound, every answer the sidecar writes itself is the guard's: a refusal, or
 * `LOCKSTEP_ERR_UPSTREAM_UNAVAILABLE` (502) / `_TIMEOUT` (504) from the guard's catalogue, audited as a
 * second event for the admitted request.
 */
import type { ServerResponse } from 'node:http';

export const SIDECAR_ERRORS = {
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
