/**
 * What the human-facing reporters (terminal, HTML) share: the attack × service matrix, the
 * findings in reading order, and the words and marks for outcomes, categories and severities.
 */
import type { AttackCategory, AttackInfo, AttackResult, Outcome, ScanReport, Severity } from '../types.ts';

export const OUTCOME_MARK: Readonly<Record<Outcome, string>> = {
  enforced: '✓',
  weak: '✗',
  inconclusive: '?',
  skipped: '–',
};

/** What a matrix cell means: one service, one attack, all its targets. */
export const CELL_MEANING: Readonly<Record<Outcome, string>> = {
  enforced: 'enforced on every target',
  weak: 'weak on at least one target',
  inconclusive: 'inconclusive on at least one target',
  skipped: 'not applicable',
};

export const CATEGORY_LABEL: Readonly<Record<AttackCategory, string>> = {
  transport: 'Transport (mTLS)',
  'txn-token': 'Transaction Tokens',
  authorization: 'Authorization',
  input: 'Input validation',
};

const SEVERITY_RANK: Readonly<Record<Severity, number>> = { critical: 0, high: 1, medium: 2, low: 3 };
// A cell shows the worst outcome among its targets.
const CELL_RANK: Readonly<Record<Outcome, number>> = { weak: 0, inconclusive: 1, enforced: 2, skipped: 3 };

export interface MatrixRow {
  readonly attack: AttackInfo;
  /** One per service, in the order of `Matrix.services`. */
  readonly cells: readonly Outcome[];
}

export interface MatrixGroup {
  readonly category: AttackCategory;
  readonly rows: readonly MatrixRow[];
}

export interface Matrix {
  readonly services: readonly string[];
  /** Categories in the order the catalogue first names them; attacks in catalogue order. */
  readonly groups: readonly MatrixGroup[];
}

export interface Finding {
  readonly result: AttackResult;
  readonly attack: AttackInfo;
}

export function scanMatrix(report: ScanReport): Matrix {
  attacksById(report);
  const services = serviceNames(report);
  const worst = new Map<string, Outcome>();
  for (const result of report.results) {
    const key = cellKey(result.attack, result.service);
    const seen = worst.get(key);
    if (seen === undefined || CELL_RANK[result.outcome] < CELL_RANK[seen]) worst.set(key, result.outcome);
  }
  const groups = new Map<AttackCategory, MatrixRow[]>();
  for (const attack of report.attacks) {
    const cells = services.map((service) => worst.get(cellKey(attack.id, service)) ?? 'skipped');
    const rows = groups.get(attack.category) ?? [];
    rows.push({ attack, cells });
    groups.set(attack.category, rows);
  }
  return { services, groups: [...groups].map(([category, rows]) => ({ category, rows })) };
}

/** The registered services, then any service that only appears in results. */
export function serviceNames(report: ScanReport): string[] {
  const names = new Set(report.services.map((service) => service.name));
  for (const result of report.results) names.add(result.service);
  return [...names];
}

/** The results with one outcome, each with its catalogue entry; most severe first, otherwise in the report's own order. */
export function findingsOf(report: ScanReport, outcome: Outcome): Finding[] {
  const attacks = attacksById(report);
  const findings = report.results
    .filter((result) => result.outcome === outcome)
    .map((result) => ({ result, attack: attackOf(attacks, result) }));
  return findings.sort((a, b) => SEVERITY_RANK[a.attack.severity] - SEVERITY_RANK[b.attack.severity]);
}

/** The catalogue entries by id; a result naming an attack the report does not list is a broken report. */
export function attacksById(report: ScanReport): Map<string, AttackInfo> {
  const attacks = new Map(report.attacks.map((attack) => [attack.id, attack]));
  for (const result of report.results) attackOf(attacks, result);
  return attacks;
}

export function attackOf(attacks: ReadonlyMap<string, AttackInfo>, result: AttackResult): AttackInfo {
  const attack = attacks.get(result.attack);
  if (attack === undefined)
    throw new TypeError(
      `scan report: result for ${result.service} names attack "${result.attack}", which report.attacks does not list`,
    );
  return attack;
}

/** `1.2 s`, `340 ms`, `2 min 5 s`. */
export function formatDuration(ms: number): string {
  if (ms < 1_000) return `${Math.round(ms)} ms`;
  if (ms < 60_000) return `${(ms / 1_000).toFixed(1)} s`;
  const seconds = Math.round(ms / 1_000);
  return `${Math.floor(seconds / 60)} min ${seconds % 60} s`;
}

export function exitMeaning(exitCode: ScanReport['exitCode']): string {
  switch (exitCode) {
    case 0:
      return 'nothing got through';
    case 1:
      return 'a weak link was found';
    case 2:
      return 'the scan is inconclusive: checks that apply could not run';
  }
}

function cellKey(attack: string, service: string): string {
  return `${attack}\u0000${service}`;
}
