/**
 * The scanner's data model: what an attack is (its catalogue entry), what one attempt found, and
 * the report of a whole scan. Every reporter (terminal, JSON, SARIF, JUnit, HTML, the monitor's scan
 * page) renders a `ScanReport` and nothing else.
 */

export type Severity = 'critical' | 'high' | 'medium' | 'low';
export type AttackCategory = 'transport' | 'txn-token' | 'authorization' | 'input';

/** A catalogue entry: stable id, how it maps to the standards, what counts as enforced. */
export interface AttackInfo {
  /** Stable, e.g. `txn.alg-none`; SARIF rule id, JUnit test name. */
  readonly id: string;
  readonly title: string;
  readonly category: AttackCategory;
  readonly severity: Severity;
  /** e.g. `['CWE-347']`. */
  readonly cwe: readonly string[];
  /** OWASP API Security Top 10 2023, e.g. `API2:2023 Broken Authentication`, when one applies. */
  readonly owasp: string | null;
  /** NIST SP 800-204 strategy area, when one applies. */
  readonly nist: string | null;
  /** How the attack is crafted. */
  readonly description: string;
  /** What answer counts as enforced. */
  readonly enforced: string;
}

/**
 * `enforced`: refused by the right step; `weak`: got further than it should (a finding);
 * `inconclusive`: the check applies but could not run or could not tell (no guard answered, a test
 * user the guards refuse or whose roles no policy names, no allowed request to vary) — the scan is
 * then inconclusive; `skipped`: not applicable to this target, or accepted in the manifest (with the reason).
 */
export type Outcome = 'enforced' | 'weak' | 'inconclusive' | 'skipped';

export interface AttackResult {
  readonly attack: string;
  /** Service name (`orders`), as registered. */
  readonly service: string;
  /** What was attacked: a route (`GET /orders/:id`) or an endpoint (`127.0.0.1:4102`). */
  readonly target: string;
  readonly outcome: Outcome;
  /** One line a reader can check: what was sent, what came back (status, reason code, request id). */
  readonly evidence: string;
  readonly status: number | null;
  readonly reason: string | null;
  readonly requestId: string | null;
  readonly durationMs: number;
}

export interface ScannedService {
  readonly name: string;
  readonly spiffeId: string | null;
  /** `host:port` the scanner was allowed to send to. */
  readonly endpoints: readonly string[];
  readonly routes: number;
  readonly source: 'registry' | 'manifest';
}

export interface ScanSummary {
  readonly enforced: number;
  readonly weak: number;
  readonly inconclusive: number;
  readonly skipped: number;
}

/** One reason checks could not run, and how many results it left inconclusive. */
export interface InconclusiveReason {
  readonly reason: string;
  readonly results: number;
}

export interface ScanReport {
  readonly tool: { readonly name: 'lockstep-scan'; readonly version: string };
  readonly runId: string;
  readonly trustDomain: string;
  readonly scanner: string;
  readonly startedAt: string;
  readonly finishedAt: string;
  readonly durationMs: number;
  readonly services: readonly ScannedService[];
  /** The catalogue entries that ran, in catalogue order. */
  readonly attacks: readonly AttackInfo[];
  /** In deterministic order: service, then attack (catalogue order), then target. */
  readonly results: readonly AttackResult[];
  readonly summary: ScanSummary;
  /** Why the scan is inconclusive: each reason checks could not run, most results first; empty when all ran. */
  readonly inconclusiveReasons: readonly InconclusiveReason[];
  /** 0 nothing got through; 1 a weak link; 2 the scan could not run (or is inconclusive). */
  readonly exitCode: 0 | 1 | 2;
}
