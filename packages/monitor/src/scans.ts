/**
 * The scan receiver: `POST /v1/scans`, on the control plane's server, over mTLS. `lockstep scan`
 * (an SVID `spiffe://<td>/scanner/<name>`) or an administrator posts the JSON report of one run:
 *
 *   201 { runId }   stored
 *   200 { runId }   the same sender posted this very report before: nothing changed
 *   409             the run id holds another report, or one from another sender: nothing changed
 *
 * The scanner recorded is the sender's SPIFFE ID from its certificate, never the report's own field.
 * The body is checked by shape (a JSON schema: the fields the monitor reads, their types, bounded
 * sizes; other fields are kept as sent) and then by a short table of checks that keep the dashboard
 * honest: our trust domain, times in order, a summary that counts the results, an exit code that
 * matches them. The monitor does not depend on the scanner package: this is the whole contract.
 */
import type { FastifyInstance } from 'fastify';
import { admittedCaller, ControlPlaneError, requireCaller, type ControlPlaneStore } from '@lockstep/control-plane';

export const SCANS_PATH = '/v1/scans';
const MAX_BODY = 4 * 1024 * 1024;
const OUTCOMES = ['enforced', 'weak', 'inconclusive', 'skipped'] as const;

type Outcome = (typeof OUTCOMES)[number];
export type ScanSummaryCounts = Record<Outcome, number>;
/** What a run means for the dashboard: nothing got through, a weak link, or a scan that could not tell. */
export type ScanStatus = 'passed' | 'weak' | 'incomplete';

/** The fields of a posted report the monitor reads (the scanner's `ScanReport`, structurally). */
interface PostedReport {
  runId: string;
  trustDomain: string;
  startedAt: string;
  finishedAt: string;
  results: { outcome: Outcome }[];
  summary: ScanSummaryCounts;
  /** Why checks could not run (absent from scanners that predate it). */
  inconclusiveReasons?: { reason: string; results: number }[];
  exitCode: 0 | 1 | 2;
}

const text = (maxLength: number) => ({ type: 'string', maxLength }) as const;
const nullableText = (maxLength: number) => ({ type: ['string', 'null'], maxLength }) as const;
const count = { type: 'integer', minimum: 0, maximum: 1_000_000_000 } as const;
const time = { type: 'string', format: 'date-time', maxLength: 40 } as const;
const object = (properties: Record<string, unknown>) =>
  ({ type: 'object', required: Object.keys(properties), properties }) as const;

const REPORT = object({
  tool: object({ name: { const: 'lockstep-scan' }, version: text(64) }),
  // It names the run in URLs (/dashboard/api/scans/:runId): a plain token.
  runId: { type: 'string', pattern: '^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$' },
  trustDomain: text(255),
  scanner: text(2_048),
  startedAt: time,
  finishedAt: time,
  durationMs: { type: 'number', minimum: 0 },
  services: {
    type: 'array',
    maxItems: 2_000,
    items: object({
      name: text(253),
      spiffeId: nullableText(2_048),
      endpoints: { type: 'array', maxItems: 64, items: text(300) },
      routes: count,
      source: { enum: ['registry', 'manifest'] },
    }),
  },
  attacks: {
    type: 'array',
    maxItems: 1_000,
    items: object({
      id: text(128),
      title: text(300),
      category: text(64),
      severity: { enum: ['critical', 'high', 'medium', 'low'] },
      cwe: { type: 'array', maxItems: 16, items: text(32) },
      owasp: nullableText(200),
      nist: nullableText(200),
      description: text(4_096),
      enforced: text(4_096),
    }),
  },
  results: {
    type: 'array',
    maxItems: 100_000,
    items: object({
      attack: text(128),
      service: text(253),
      target: text(1_024),
      outcome: { enum: OUTCOMES },
      evidence: text(8_192),
      status: { type: ['integer', 'null'], minimum: 0, maximum: 999 },
      reason: nullableText(200),
      requestId: nullableText(200),
      durationMs: { type: 'number', minimum: 0 },
    }),
  },
  summary: object({ enforced: count, weak: count, inconclusive: count, skipped: count }),
  exitCode: { enum: [0, 1, 2] },
});

export const SCAN_REPORT_SCHEMA = {
  ...REPORT,
  properties: {
    ...REPORT.properties,
    // Optional: a report of a scanner older than it is still taken.
    inconclusiveReasons: { type: 'array', maxItems: 10_000, items: object({ reason: text(8_192), results: count }) },
  },
} as const;

/** The checks the schema cannot express, in order; the first that fails refuses the report. */
const CHECKS: readonly { readonly name: string; problem(report: PostedReport, trustDomain: string): string | null }[] =
  [
    {
      name: 'trust domain',
      problem: (report, trustDomain) =>
        report.trustDomain === trustDomain
          ? null
          : `the report is for trust domain ${JSON.stringify(report.trustDomain)}; this control plane is ${trustDomain}`,
    },
    {
      name: 'times',
      problem: (report) =>
        Date.parse(report.finishedAt) >= Date.parse(report.startedAt) ? null : 'finishedAt is before startedAt',
    },
    {
      name: 'summary',
      problem: (report) => {
        const counted = countOutcomes(report.results);
        const wrong = OUTCOMES.filter((outcome) => counted[outcome] !== report.summary[outcome]);
        return wrong.length === 0
          ? null
          : `the summary does not count the results: ${wrong.map((outcome) => `${outcome} ${report.summary[outcome]}, counted ${counted[outcome]}`).join('; ')}`;
      },
    },
    {
      name: 'inconclusive reasons',
      problem: (report) => {
        if (report.inconclusiveReasons === undefined) return null;
        const counted = report.inconclusiveReasons.reduce((sum, entry) => sum + entry.results, 0);
        if (counted === report.summary.inconclusive) return null;
        return `the reasons account for ${counted} inconclusive results; the summary has ${report.summary.inconclusive}`;
      },
    },
    {
      name: 'exit code',
      problem: (report) => {
        if (report.exitCode === 0 && (report.summary.weak > 0 || report.summary.inconclusive > 0))
          return 'exitCode 0 (nothing got through) with weak or inconclusive results';
        if (report.exitCode === 1 && report.summary.weak === 0) return 'exitCode 1 (a weak link) without a weak result';
        return null;
      },
    },
  ];

function countOutcomes(results: readonly { outcome: Outcome }[]): ScanSummaryCounts {
  const counted: ScanSummaryCounts = { enforced: 0, weak: 0, inconclusive: 0, skipped: 0 };
  for (const result of results) counted[result.outcome] += 1;
  return counted;
}

/** A weak link outweighs everything; otherwise a scan that could not finish or tell is incomplete. */
export function scanStatus(summary: ScanSummaryCounts, exitCode: number): ScanStatus {
  if (summary.weak > 0) return 'weak';
  if (exitCode !== 0 || summary.inconclusive > 0) return 'incomplete';
  return 'passed';
}

export interface ScanReceiverOptions {
  readonly store: ControlPlaneStore;
  readonly trustDomain: string;
}

export interface ScanReceiver {
  /** For `startControlPlane({ extensions: [scans.register] })`. */
  register(app: FastifyInstance): void;
}

export function createScanReceiver(options: ScanReceiverOptions): ScanReceiver {
  function register(app: FastifyInstance): void {
    app.post<{ Body: PostedReport }>(
      SCANS_PATH,
      {
        // Who is calling is decided before the body is even read.
        onRequest: requireCaller(options.trustDomain, ['scanner', 'admin'], 'LOCKSTEP_CP_ADMIN_REQUIRED'),
        bodyLimit: MAX_BODY,
        schema: { body: SCAN_REPORT_SCHEMA },
      },
      async (request, reply) => {
        const report = request.body;
        for (const check of CHECKS) {
          const problem = check.problem(report, options.trustDomain);
          if (problem !== null) throw new ControlPlaneError('LOCKSTEP_CP_REQUEST_INVALID', `${check.name}: ${problem}`);
        }
        const scanner = admittedCaller(request);
        const outcome = await options.store.recordScan({
          runId: report.runId,
          scanner,
          trustDomain: report.trustDomain,
          startedAt: Date.parse(report.startedAt),
          finishedAt: Date.parse(report.finishedAt),
          exitCode: report.exitCode,
          summary: JSON.stringify(Object.fromEntries(OUTCOMES.map((outcome) => [outcome, report.summary[outcome]]))),
          report: JSON.stringify(report),
          receivedAt: Date.now(),
        });
        if (outcome === 'conflict')
          throw new ControlPlaneError(
            'LOCKSTEP_CP_SCAN_EXISTS',
            `run ${report.runId} holds another report (or one sent by another scanner than ${scanner}); a new scan needs a new run id`,
          );
        return reply.code(outcome === 'stored' ? 201 : 200).send({ runId: report.runId });
      },
    );
  }

  return { register };
}
