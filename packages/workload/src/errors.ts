/**
 * The workload side's own refusals, one catalogue (documented in the README, checked by a test both
 * ways). A refusal by the control plane keeps the control plane's code (`LOCKSTEP_CP_…`, its
 * README's catalogue), so a caller can tell a spent join token from an impostor.
 */
export const WORKLOAD_ERROR_CODES = [
  'LOCKSTEP_ENROL_TOKEN_MALFORMED',
  'LOCKSTEP_ENROL_BUNDLE',
  'LOCKSTEP_ENROL_BUNDLE_MISMATCH',
  'LOCKSTEP_ENROL_SVID',
  'LOCKSTEP_ENROL_FAILED',
  'LOCKSTEP_ENROL_CA_CHANGED',
  'LOCKSTEP_TXN_TOKEN_REFUSED',
  'LOCKSTEP_TXN_TOKEN_UNAVAILABLE',
] as const;

export type WorkloadErrorCode = (typeof WORKLOAD_ERROR_CODES)[number];

/** A refused join or renewal: one of ours, or the control plane's code passed on with its HTTP status. */
export type EnrolmentErrorCode = Extract<WorkloadErrorCode, `LOCKSTEP_ENROL_${string}`> | `LOCKSTEP_CP_${string}`;

export class EnrolmentError extends Error {
  readonly code: EnrolmentErrorCode;
  /** The control plane's HTTP status, when it answered the refusal. */
  readonly status: number | null;
  constructor(code: EnrolmentErrorCode, message: string, status: number | null = null, options: ErrorOptions = {}) {
    super(message, options);
    this.name = 'EnrolmentError';
    this.code = code;
    this.status = status;
  }
}

export type TxnTokenErrorCode = Extract<WorkloadErrorCode, `LOCKSTEP_TXN_TOKEN_${string}`>;

/**
 * No Txn-Token. `LOCKSTEP_TXN_TOKEN_REFUSED`: the service answered — with an OAuth error
 * (`error`, e.g. `invalid_grant` for a revoked or expired subject token: its user must sign in
 * again) or a refusal of this workload (`LOCKSTEP_CP_…`). `LOCKSTEP_TXN_TOKEN_UNAVAILABLE`: no
 * answer (connection refused, reset, timed out or aborted); only this is an outage.
 */
export class TxnTokenError extends Error {
  readonly code: TxnTokenErrorCode;
  /** The `error` the service answered (RFC 6749 §5.2, or a LOCKSTEP_CP_ code); null without one. */
  readonly error: string | null;
  readonly status: number | null;
  constructor(
    code: TxnTokenErrorCode,
    message: string,
    details: { error?: string | null; status?: number | null; cause?: unknown } = {},
  ) {
    super(message, details.cause === undefined ? {} : { cause: details.cause });
    this.name = 'TxnTokenError';
    this.code = code;
    this.error = details.error ?? null;
    this.status = details.status ?? null;
  }
}
