/**
 * The detection rules: what each looks for, its threshold, and how bad it is. The table in the
 * README is this list (a test keeps them the same).
 */
import { STALE_AFTER_MS } from '@lockstep/control-plane';

export type RuleId =
  | 'brute-force'
  | 'password-spraying'
  | 'denial-burst'
  | 'lateral-movement'
  | 'txn-replay'
  | 'use-after-revocation'
  | 'untrusted-certificate'
  | 'policy-drift'
  | 'svid-expiring'
  | 'dry-run'
  | 'audit-gap'
  | 'spool-drops'
  | 'guard-silent'
  | 'guard-resumed'
  | 'control-plane-unreachable'
  | 'svid-recovery-reuse';

/**
 * The reasons with which an edge that records its own decisions (the reference shop's gateway)
 * refuses a request because the control plane did not answer (no Txn-Token could be had): evidence
 * of an outage, and no caller's doing.
 */
export const OUTAGE_REASONS: readonly string[] = ['CONTROL_PLANE_UNAVAILABLE'];

export interface Rule {
  readonly id: RuleId;
  readonly severity: 'critical' | 'high' | 'medium' | 'low';
  readonly fires: string;
}

export interface Thresholds {
  /** Failed sign-ins for one account… */
  readonly bruteForceFailures: number;
  /** …or distinct accounts failing from one address, within… */
  readonly sprayingAccounts: number;
  readonly loginWindowMs: number;
  /** Denials for one caller within `denialWindowMs`. */
  readonly denialBurst: number;
  readonly denialWindowMs: number;
  /** Refused client certificates at one service within `denialWindowMs`. */
  readonly untrustedCertificates: number;
  /** A guard behind the policy in force for longer than this. */
  readonly driftAfterMs: number;
  /** A registered SVID closer to expiry than this. */
  readonly svidExpiryMs: number;
  /** One alert per rule and subject within this time. */
  readonly cooldownMs: number;
  /** A registered guard that has not reported for this long, and did not deregister, is silent. */
  readonly silentAfterMs: number;
  /** An outage is reported once no guard has said more about it for this long… */
  readonly outageSettleMs: number;
  /** …and reports of one this close together (by the guards' clocks) are the same outage. */
  readonly outageGapMs: number;
  /** A transaction's hop from a caller that ships no decisions is judged this long after it arrived. */
  readonly txnSettleMs: number;
}

export const DEFAULT_THRESHOLDS: Thresholds = {
  bruteForceFailures: 5,
  sprayingAccounts: 10,
  loginWindowMs: 5 * 60_000,
  denialBurst: 20,
  denialWindowMs: 60_000,
  untrustedCertificates: 3,
  driftAfterMs: 10_000,
  svidExpiryMs: 10 * 60_000,
  cooldownMs: 5 * 60_000,
  silentAfterMs: STALE_AFTER_MS,
  outageSettleMs: 30_000,
  outageGapMs: 60_000,
  txnSettleMs: 30_000,
};

export const RULES: readonly Rule[] = [
  { id: 'brute-force', severity: 'high', fires: '5 failed sign-ins for one account within 5 min' },
  {
    id: 'password-spraying',
    severity: 'high',
    fires: 'failed sign-ins for 10 different accounts from one address within 5 min',
  },
  { id: 'denial-burst', severity: 'medium', fires: '20 refused requests from one caller within 60 s' },
  {
    id: 'lateral-movement',
    severity: 'high',
    fires: 'a service calls another on an edge the policy refuses and that was never allowed before',
  },
  {
    id: 'txn-replay',
    severity: 'high',
    fires: "a transaction's Txn-Token presented by a workload outside its call chain, or after it expired",
  },
  {
    id: 'use-after-revocation',
    severity: 'high',
    fires: 'a request refused because its user, transaction, signing key or caller is revoked',
  },
  {
    id: 'untrusted-certificate',
    severity: 'medium',
    fires:
      '3 requests to one service within 60 s without a client certificate, with an untrusted one, or from another trust domain',
  },
  {
    id: 'policy-drift',
    severity: 'medium',
    fires: 'a guard enforces a policy version other than the one in force for more than 10 s',
  },
  {
    id: 'svid-expiring',
    severity: 'high',
    fires: "a registered guard's SVID expires within 10 min (it has not renewed)",
  },
  {
    id: 'dry-run',
    severity: 'medium',
    fires: 'a guard runs in dry-run mode, or with dry-run routes: denials are let through',
  },
  {
    id: 'audit-gap',
    severity: 'high',
    fires: 'events a guard numbered never arrived, or the trail no longer verifies',
  },
  { id: 'spool-drops', severity: 'high', fires: 'a guard dropped decision events because its spool was full' },
  {
    id: 'guard-silent',
    severity: 'high',
    fires:
      'a registered guard has not reported for 60 s and did not deregister (it crashed, hangs or is cut off); once per silence',
  },
  { id: 'guard-resumed', severity: 'low', fires: 'a guard reported silent reports again' },
  {
    id: 'control-plane-unreachable',
    severity: 'high',
    fires:
      "guards report that they could not reach the control plane; once per outage, 30 s after a service's last word of it, at most once in 5 min per service",
  },
  {
    id: 'svid-recovery-reuse',
    severity: 'critical',
    fires:
      "an expired SVID was presented for recovery after it had been renewed or recovered for another key, or retired by its workload's clean stop: two holders of one key (a stolen key, or a cloned workload)",
  },
];
