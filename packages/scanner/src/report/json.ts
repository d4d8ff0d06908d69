/**
 * The JSON report: the `ScanReport` itself, the faithful record (evidence exactly as captured) that
 * the monitor's `POST /v1/scans` takes. Keys are written in the data model's order whatever order the
 * object was built in, and only the data model's keys, so two renderings of one scan are the same
 * bytes and diff cleanly.
 */
import type { AttackInfo, AttackResult, ScanReport, ScannedService } from '../types.ts';

export function renderJson(report: ScanReport): string {
  return `${JSON.stringify(canonical(report), null, 2)}\n`;
}

function canonical(report: ScanReport): ScanReport {
  const { enforced, weak, inconclusive, skipped } = report.summary;
  return {
    tool: { name: report.tool.name, version: report.tool.version },
    runId: report.runId,
    trustDomain: report.trustDomain,
    scanner: report.scanner,
    startedAt: report.startedAt,
    finishedAt: report.finishedAt,
    durationMs: report.durationMs,
    services: report.services.map(service),
    attacks: report.attacks.map(attack),
    results: report.results.map(result),
    summary: { enforced, weak, inconclusive, skipped },
    inconclusiveReasons: report.inconclusiveReasons.map(({ reason, results }) => ({ reason, results })),
    exitCode: report.exitCode,
  };
}

function service(s: ScannedService): ScannedService {
  return { name: s.name, spiffeId: s.spiffeId, endpoints: [...s.endpoints], routes: s.routes, source: s.source };
}

function attack(a: AttackInfo): AttackInfo {
  return {
    id: a.id,
    title: a.title,
    category: a.category,
    severity: a.severity,
    cwe: [...a.cwe],
    owasp: a.owasp,
    nist: a.nist,
    description: a.description,
    enforced: a.enforced,
  };
}

function result(r: AttackResult): AttackResult {
  return {
    attack: r.attack,
    service: r.service,
    target: r.target,
    outcome: r.outcome,
    evidence: r.evidence,
    status: r.status,
    reason: r.reason,
    requestId: r.requestId,
    durationMs: r.durationMs,
  };
}
