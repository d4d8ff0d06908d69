/**
 * The SARIF 2.1.0 report, for code-scanning dashboards. One run; one rule per catalogue entry that
 * ran; one result per weak link (enforced and skipped attempts are not findings); inconclusive
 * attempts are tool execution notifications (and the invocation did not succeed), since they say the
 * scan is inconclusive rather than that a service is weak; each reason checks could not run comes
 * first, as an error notification of its own. There are no source files: a result's location is
 * logical, `service/target`.
 * Severity follows GitHub's `security-severity` convention (a CVSS-like number as a string).
 */
import { createHash } from 'node:crypto';
import type { Location, Log, Notification, ReportingDescriptor, Result } from 'sarif';
import type { AttackInfo, AttackResult, ScanReport, Severity } from '../types.ts';
import { attackOf, attacksById, exitMeaning } from './matrix.ts';
import { printable } from './printable.ts';

export const SARIF_SCHEMA_URI = 'https://docs.oasis-open.org/sarif/sarif/v2.1.0/os/schemas/sarif-schema-2.1.0.json';
/** Where the scanner is described. The project has no public site yet: a name, not a link. */
export const SCANNER_INFORMATION_URI = 'urn:lockstep:scanner';
/** Bump the suffix if what the fingerprint hashes ever changes: dashboards match findings on it. */
const FINGERPRINT_KEY = 'lockstepTarget/v1';

const SECURITY_SEVERITY: Readonly<Record<Severity, string>> = {
  critical: '9.5',
  high: '8.0',
  medium: '5.5',
  low: '3.0',
};
const LEVEL: Readonly<Record<Severity, 'error' | 'warning'>> = {
  critical: 'error',
  high: 'error',
  medium: 'warning',
  low: 'warning',
};

export function renderSarif(report: ScanReport): string {
  const ruleIndex = new Map(report.attacks.map((attack, index) => [attack.id, index]));
  const attacks = attacksById(report);
  const reference = (result: AttackResult) => {
    const attack = attackOf(attacks, result);
    return { attack, index: ruleIndex.get(attack.id) ?? -1 };
  };

  const log: Log = {
    $schema: SARIF_SCHEMA_URI,
    version: '2.1.0',
    runs: [
      {
        tool: {
          driver: {
            name: report.tool.name,
            version: report.tool.version,
            informationUri: SCANNER_INFORMATION_URI,
            rules: report.attacks.map(rule),
          },
        },
        automationDetails: { id: `${report.tool.name}/${report.trustDomain}/${report.runId}` },
        invocations: [
          {
            executionSuccessful: report.exitCode !== 2 && report.summary.inconclusive === 0,
            exitCode: report.exitCode,
            exitCodeDescription: exitMeaning(report.exitCode),
            startTimeUtc: report.startedAt,
            endTimeUtc: report.finishedAt,
            toolExecutionNotifications: [
              ...report.inconclusiveReasons.map(({ reason, results }): Notification => {
                const checks = `${results} ${results === 1 ? 'check' : 'checks'}`;
                return { level: 'error', message: { text: `${checks} could not run: ${printable(reason)}` } };
              }),
              ...report.results
                .filter((result) => result.outcome === 'inconclusive')
                .map((result) => {
                  const { attack, index } = reference(result);
                  return notification(result, attack, index);
                }),
            ],
          },
        ],
        results: report.results
          .filter((result) => result.outcome === 'weak')
          .map((result) => {
            const { attack, index } = reference(result);
            return finding(result, attack, index);
          }),
        properties: {
          trustDomain: report.trustDomain,
          runId: report.runId,
          scanner: report.scanner,
          services: report.services.map((service) => service.name),
          summary: { ...report.summary },
          inconclusiveReasons: report.inconclusiveReasons.map(({ reason, results }) => ({
            reason: printable(reason),
            results,
          })),
          durationMs: report.durationMs,
        },
      },
    ],
  };
  return `${JSON.stringify(log, null, 2)}\n`;
}

function rule(attack: AttackInfo): ReportingDescriptor {
  const tags = new Set(['security', attack.category, ...attack.cwe]);
  // GitHub files CWE tags written this way under the CWE's name.
  for (const cwe of attack.cwe) tags.add(`external/cwe/${cwe.toLowerCase()}`);
  if (attack.owasp !== null) tags.add(`OWASP ${attack.owasp}`);
  if (attack.nist !== null) tags.add(`NIST SP 800-204 ${attack.nist}`);
  return {
    id: attack.id,
    name: ruleName(attack.id),
    shortDescription: { text: attack.title },
    fullDescription: { text: attack.description },
    help: { text: `Enforced when: ${attack.enforced}` },
    defaultConfiguration: { level: LEVEL[attack.severity] },
    properties: {
      tags: [...tags],
      'security-severity': SECURITY_SEVERITY[attack.severity],
      severity: attack.severity,
      cwe: [...attack.cwe],
      owasp: attack.owasp,
      nist: attack.nist,
    },
  };
}

function finding(result: AttackResult, attack: AttackInfo, index: number): Result {
  return {
    ruleId: attack.id,
    ruleIndex: index,
    level: LEVEL[attack.severity],
    message: { text: printable(result.evidence) },
    locations: [location(result)],
    partialFingerprints: { [FINGERPRINT_KEY]: fingerprint(result) },
    properties: {
      service: result.service,
      target: result.target,
      status: result.status,
      reason: result.reason,
      requestId: result.requestId,
      durationMs: result.durationMs,
    },
  };
}

function notification(result: AttackResult, attack: AttackInfo, index: number): Notification {
  return {
    level: 'warning',
    message: { text: `inconclusive: ${printable(result.evidence)}` },
    associatedRule: { id: attack.id, index },
    locations: [location(result)],
    properties: {
      service: result.service,
      target: result.target,
      status: result.status,
      reason: result.reason,
      requestId: result.requestId,
    },
  };
}

function location(result: AttackResult): Location {
  return {
    logicalLocations: [
      {
        name: printable(result.target),
        fullyQualifiedName: printable(`${result.service}/${result.target}`),
        kind: 'resource',
      },
    ],
  };
}

/** Stable across runs and scanner versions: the same weak link keeps its identity until it is fixed. */
function fingerprint(result: AttackResult): string {
  return createHash('sha256')
    .update(JSON.stringify([result.service, result.target, result.attack]))
    .digest('hex');
}

/** `txn.alg-none` → `TxnAlgNone`: SARIF wants a rule name that reads as one identifier. */
function ruleName(id: string): string {
  return id
    .split(/[^A-Za-z0-9]+/)
    .filter(Boolean)
    .map((part) => part.charAt(0).toUpperCase() + part.slice(1))
    .join('');
}
