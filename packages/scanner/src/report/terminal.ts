/**
 * The terminal report: an attack × service matrix (attacks down, since there are ~40 of them and a
 * handful of services), every weak link with its evidence, the inconclusive attempts whose answer
 * needs reading, why the scan is inconclusive (each reason checks could not run, once, with a count),
 * one summary line. Fits 120 columns
 * for up to six services; colour is an addition, never the only signal.
 */
import type { Outcome, ScanReport, Severity } from '../types.ts';
import {
  CATEGORY_LABEL,
  CELL_MEANING,
  OUTCOME_MARK,
  findingsOf,
  formatDuration,
  scanMatrix,
  type Finding,
} from './matrix.ts';
import { printable } from './printable.ts';

export interface TerminalOptions {
  readonly color: boolean;
}

const WIDTH = 120;
const INDENT = '  ';
const GAP = '  ';
const MAX_ID = 32;
const MIN_TITLE = 16;
const SERVICE_WIDTH = { min: 3, max: 12 };
const SEVERITY_WIDTH = 8; // `critical`
const DETAIL_INDENT = '    ';
const DETAIL_LABEL_WIDTH = 10; // `evidence` and two spaces
const EXIT_BRIEF: Readonly<Record<ScanReport['exitCode'], string>> = {
  0: 'nothing got through',
  1: 'weak link',
  2: 'inconclusive',
};

type Style = 'bold' | 'dim' | 'green' | 'red' | 'yellow' | 'magenta' | 'cyan';
const SGR: Readonly<Record<Style, string>> = {
  bold: '1',
  dim: '2',
  red: '31',
  green: '32',
  yellow: '33',
  magenta: '35',
  cyan: '36',
};
const OUTCOME_STYLE: Readonly<Record<Outcome, readonly Style[]>> = {
  enforced: ['green'],
  weak: ['red', 'bold'],
  inconclusive: ['yellow', 'bold'],
  skipped: ['dim'],
};
const SEVERITY_STYLE: Readonly<Record<Severity, readonly Style[]>> = {
  critical: ['magenta', 'bold'],
  high: ['red'],
  medium: ['yellow'],
  low: ['cyan'],
};

export function renderTerminal(report: ScanReport, options: TerminalOptions): string {
  const paint = (text: string, styles: readonly Style[]): string =>
    options.color && styles.length > 0
      ? `\u001b[${styles.map((style) => SGR[style]).join(';')}m${text}\u001b[0m`
      : text;
  const lines = [
    ...header(report, paint),
    '',
    ...matrixLines(report, paint),
    '',
    ...findingLines('Weak links', findingsOf(report, 'weak'), paint),
    ...findingLines('Inconclusive', unexplained(report), paint),
    ...reasonLines(report, paint),
    summaryLine(report, paint),
  ];
  return `${lines.join('\n')}\n`;
}

type Paint = (text: string, styles: readonly Style[]) => string;

function header(report: ScanReport, paint: Paint): string[] {
  return [
    `${paint(`Lockstep scan of ${printable(report.trustDomain)}`, ['bold'])}  run ${printable(report.runId)}  (${printable(report.tool.name)} ${printable(report.tool.version)})`,
    paint(`scanner ${printable(report.scanner)}  ${printable(report.startedAt)} → ${printable(report.finishedAt)}`, [
      'dim',
    ]),
  ];
}

function matrixLines(report: ScanReport, paint: Paint): string[] {
  const matrix = scanMatrix(report);
  const services = matrix.services.map((name) => printable(name));
  const serviceWidths = services.map((name) => Math.min(Math.max(width(name), SERVICE_WIDTH.min), SERVICE_WIDTH.max));
  const attacks = matrix.groups.flatMap((group) => group.rows.map((row) => row.attack));
  const idWidth = Math.min(Math.max(width('Attack'), ...attacks.map((attack) => width(printable(attack.id)))), MAX_ID);
  const severityWidth = SEVERITY_WIDTH;
  const fixed =
    INDENT.length + idWidth + GAP.length + severityWidth + serviceWidths.reduce((sum, w) => sum + GAP.length + w, 0);
  const titleWidth = WIDTH - fixed - GAP.length;
  const showTitle = titleWidth >= MIN_TITLE;

  const row = (id: string, title: string, severity: string, cells: readonly string[]): string =>
    [INDENT + id, ...(showTitle ? [title] : []), severity, ...cells].join(GAP).trimEnd();

  const lines = [
    paint(
      row(
        pad('Attack', idWidth),
        pad('Title', titleWidth),
        pad('Severity', severityWidth),
        services.map((name, i) => center(truncate(name, serviceWidths[i] ?? 0), serviceWidths[i] ?? 0)),
      ),
      ['bold'],
    ),
  ];
  for (const group of matrix.groups) {
    lines.push(paint(CATEGORY_LABEL[group.category], ['bold']));
    for (const { attack, cells } of group.rows) {
      lines.push(
        row(
          pad(truncate(printable(attack.id), idWidth), idWidth),
          pad(truncate(printable(attack.title), titleWidth), titleWidth),
          paint(pad(attack.severity, severityWidth), SEVERITY_STYLE[attack.severity]),
          cells.map((outcome, i) =>
            center(OUTCOME_MARK[outcome], serviceWidths[i] ?? 0, (mark) => paint(mark, OUTCOME_STYLE[outcome])),
          ),
        ),
      );
    }
  }
  if (attacks.length === 0) lines.push(`${INDENT}(no attack ran)`);
  const legend = (['enforced', 'weak', 'inconclusive', 'skipped'] as const).map(
    (outcome) => `${paint(OUTCOME_MARK[outcome], OUTCOME_STYLE[outcome])} ${CELL_MEANING[outcome]}`,
  );
  lines.push(INDENT + legend.join('   '));
  return lines;
}

/**
 * Three lines a finding, each within the width: what (mark, severity, attack, title), where
 * (service and target), evidence; long text wraps under its label.
 */
function findingLines(heading: string, findings: readonly Finding[], paint: Paint): string[] {
  if (findings.length === 0) return [];
  const lines = [paint(`${heading} (${findings.length})`, ['bold'])];
  for (const { result, attack } of findings) {
    const id = printable(attack.id);
    const what = `${INDENT}${OUTCOME_MARK[result.outcome]} ${pad(attack.severity, SEVERITY_WIDTH)}  ${id}  `;
    const title = truncate(printable(attack.title), WIDTH - width(what));
    lines.push(
      `${INDENT}${paint(OUTCOME_MARK[result.outcome], OUTCOME_STYLE[result.outcome])} ${paint(pad(attack.severity, SEVERITY_WIDTH), SEVERITY_STYLE[attack.severity])}  ${paint(id, ['bold'])}  ${title}`.trimEnd(),
    );
    lines.push(...labelled('target', `${printable(result.service)}  ${printable(result.target)}`));
    lines.push(...labelled('evidence', printable(result.evidence)));
  }
  lines.push('');
  return lines;
}

/**
 * The inconclusive results that their reason does not already say all about: a check that could not
 * run says just its reason (listed once, with a count); one that got an answer it could not read shows
 * that answer.
 */
function unexplained(report: ScanReport): Finding[] {
  const reasons = new Set(report.inconclusiveReasons.map((entry) => entry.reason));
  return findingsOf(report, 'inconclusive').filter(({ result }) => !reasons.has(result.evidence));
}

/** Each reason checks could not run, once, with how many results it left inconclusive. */
function reasonLines(report: ScanReport, paint: Paint): string[] {
  const reasons = report.inconclusiveReasons;
  if (reasons.length === 0) return [];
  const lines = [paint(`Why the scan is inconclusive (${plural(reasons.length, 'reason')})`, ['bold'])];
  for (const { reason, results } of reasons) {
    const count = `${INDENT}${OUTCOME_MARK.inconclusive} ${plural(results, 'check')}  `;
    const [first = '', ...rest] = wrap(printable(reason), WIDTH - width(count));
    const mark = paint(OUTCOME_MARK.inconclusive, OUTCOME_STYLE.inconclusive);
    lines.push(`${INDENT}${mark} ${plural(results, 'check')}  ${first}`);
    lines.push(...rest.map((line) => ' '.repeat(width(count)) + line));
  }
  lines.push('');
  return lines;
}

function labelled(label: string, text: string): string[] {
  const indent = DETAIL_INDENT + ' '.repeat(DETAIL_LABEL_WIDTH);
  return wrap(text, WIDTH - indent.length).map(
    (line, i) => (i === 0 ? DETAIL_INDENT + pad(label, DETAIL_LABEL_WIDTH) : indent) + line,
  );
}

function summaryLine(report: ScanReport, paint: Paint): string {
  const { enforced, weak, inconclusive, skipped } = report.summary;
  const counts = [
    paint(`${enforced} enforced`, enforced > 0 ? OUTCOME_STYLE.enforced : []),
    paint(`${weak} weak`, weak > 0 ? OUTCOME_STYLE.weak : []),
    paint(`${inconclusive} inconclusive`, inconclusive > 0 ? OUTCOME_STYLE.inconclusive : []),
    `${skipped} skipped`,
  ].join(', ');
  const scope = `${plural(report.services.length, 'service')} × ${plural(report.attacks.length, 'attack')} in ${formatDuration(report.durationMs)}`;
  return `${paint('Summary:', ['bold'])} ${counts}; ${scope}; exit ${report.exitCode}: ${EXIT_BRIEF[report.exitCode]}`;
}

function plural(count: number, noun: string): string {
  return `${count} ${noun}${count === 1 ? '' : 's'}`;
}

/** Columns a string takes, counting code points: ids, titles and marks are not wide characters. */
function width(text: string): number {
  return [...text].length;
}

function truncate(text: string, columns: number): string {
  const chars = [...text];
  return chars.length <= columns ? text : `${chars.slice(0, Math.max(columns - 1, 0)).join('')}…`;
}

function pad(text: string, columns: number): string {
  return text + ' '.repeat(Math.max(columns - width(text), 0));
}

/** Centred; `style` paints the text alone, so the escapes do not count towards the width. */
function center(text: string, columns: number, style: (text: string) => string = (plain) => plain): string {
  const left = Math.max(Math.floor((columns - width(text)) / 2), 0);
  const right = Math.max(columns - left - width(text), 0);
  return ' '.repeat(left) + style(text) + ' '.repeat(right);
}

/** Word wrap; a word longer than the line is cut. */
function wrap(text: string, columns: number): string[] {
  const lines: string[] = [];
  let line = '';
  for (const word of text.split(' ')) {
    let rest = word;
    while (width(rest) > columns) {
      if (line !== '') {
        lines.push(line);
        line = '';
      }
      const chars = [...rest];
      lines.push(chars.slice(0, columns).join(''));
      rest = chars.slice(columns).join('');
    }
    if (line === '') line = rest;
    else if (width(line) + 1 + width(rest) <= columns) line += ` ${rest}`;
    else {
      lines.push(line);
      line = rest;
    }
  }
  if (line !== '') lines.push(line);
  return lines;
}
