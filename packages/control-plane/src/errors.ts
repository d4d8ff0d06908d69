/**
 * The control plane's error catalogue. A caller's misuse of an API is a TypeError; everything a
 * client can cause (a bad join token, a bad CSR) is a ControlPlaneError with a stable code, mapped
 * to one HTTP status by the endpoints.
 */
export const CONTROL_PLANE_ERRORS = {
  LOCKSTEP_CP_JOIN_TOKEN_INVALID: { status: 401, message: 'join token unknown, malformed or for another trust bundle' },
  LOCKSTEP_CP_JOIN_TOKEN_USED: { status: 401, message: 'join token already used' },
  LOCKSTEP_CP_JOIN_TOKEN_EXPIRED: { status: 401, message: 'join token expired' },
  LOCKSTEP_CP_JOIN_TOKEN_WRONG_SERVICE: { status: 403, message: 'join token is for another service' },
  LOCKSTEP_CP_CSR_INVALID: { status: 400, message: 'certificate signing request refused' },
  LOCKSTEP_CP_WORKLOAD_REVOKED: { status: 403, message: 'workload is revoked' },
  LOCKSTEP_CP_RECOVERY_REFUSED: { status: 403, message: 'recovery refused' },
  LOCKSTEP_CP_RECOVERY_EARLY: { status: 409, message: 'the SVID is still valid: renew it (POST /v1/renew)' },
  LOCKSTEP_CP_RECOVERY_EXPIRED: {
    status: 403,
    message: 'the SVID expired longer ago than the recovery window: join again with a new join token',
  },
  LOCKSTEP_CP_PEER_UNAUTHENTICATED: {
    status: 401,
    message: 'this endpoint needs a valid client SVID of the trust domain',
  },
  LOCKSTEP_CP_PEER_REVOKED: { status: 401, message: 'the SPIFFE ID of the client SVID is revoked' },
  LOCKSTEP_CP_ADMIN_REQUIRED: {
    status: 403,
    message: 'this endpoint is for administrators (an SVID spiffe://<trust domain>/admin/<name>)',
  },
  LOCKSTEP_CP_REQUEST_INVALID: { status: 400, message: 'request body refused' },
  LOCKSTEP_CP_PASSWORD_POLICY: { status: 400, message: 'password refused by the password policy' },
  LOCKSTEP_CP_USER_EXISTS: { status: 409, message: 'user already exists' },
  LOCKSTEP_CP_NOT_REVOKED: { status: 404, message: 'nothing is revoked under this value: nothing to lift' },
  LOCKSTEP_CP_SCAN_EXISTS: { status: 409, message: 'another scan report was stored under this run id' },
  LOCKSTEP_CP_NO_POLICY: { status: 503, message: 'no policy to serve' },
  LOCKSTEP_CP_ROTATION_STATE: { status: 409, message: 'root rotation step out of order' },
  LOCKSTEP_CP_STORE: { status: 503, message: 'store unavailable' },
  LOCKSTEP_CP_AUDIT_UNAVAILABLE: { status: 503, message: 'the audit trail could not record this administrative call' },
} as const satisfies Record<string, { status: number; message: string }>;

export type ControlPlaneErrorCode = keyof typeof CONTROL_PLANE_ERRORS;

export class ControlPlaneError extends Error {
  readonly code: ControlPlaneErrorCode;
  readonly status: number;

  constructor(code: ControlPlaneErrorCode, detail?: string) {
    const entry = CONTROL_PLANE_ERRORS[code];
    super(detail === undefined ? entry.message : `${entry.message}: ${detail}`);
    this.name = 'ControlPlaneError';
    this.code = code;
    this.status = entry.status;
  }
}
