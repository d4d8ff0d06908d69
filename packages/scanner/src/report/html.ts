/**
 * The HTML report: one self-contained page to attach to a ticket or an audit — the verdict, the
 * attack × service matrix, every weak link with its evidence and the standards it maps to, the
 * inconclusive and skipped attempts, the services, the catalogue. No script, no external resource:
 * the page's own Content-Security-Policy allows nothing but its one inline stylesheet (by hash), so
 * even evidence that slipped past escaping could not load or run anything. Outcomes are told by
 * mark and word, never by colour alone.
 */
import { createHash } from 'node:crypto';
import type { AttackInfo, Outcome, ScanReport } from '../types.ts';
import {
  CATEGORY_LABEL,
  CELL_MEANING,
  OUTCOME_MARK,
  exitMeaning,
  findingsOf,
  formatDuration,
  scanMatrix,
  type Finding,
} from './matrix.ts';
import { printable } from './printable.ts';

const HTML_ESCAPES: Readonly<Record<string, string>> = {
  '&': '&amp;',
  '<': '&lt;',
  '>': '&gt;',
  '"': '&quot;',
  "'": '&#39;',
};
const VERDICT_OUTCOME: Readonly<Record<ScanReport['exitCode'], Outcome>> = {
  0: 'enforced',
  1: 'weak',
  2: 'inconclusive',
};

const CSS = `
:root { color-scheme: light; --text: #1f2328; --muted: #59636e; --line: #d1d9e0; --panel: #f6f8fa;
  --weak-bg: #ffebe9; --weak: #82071e; --ok-bg: #dafbe1; --ok: #116329; --unsure-bg: #fff8c5; --unsure: #6c4400; --skip: #59636e; }
* { box-sizing: border-box; }
body { margin: 0; font: 15px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif; color: var(--text); background: #fff; }
header, main, footer { max-width: 1200px; margin: 0 auto; padding: 0 24px; }
header { padding-top: 32px; padding-bottom: 8px; border-bottom: 1px solid var(--line); }
.eyebrow { margin: 0; color: var(--muted); font-size: 13px; letter-spacing: .06em; text-transform: uppercase; }
h1 { margin: 4px 0 12px; font-size: 28px; }
h2 { margin: 40px 0 12px; font-size: 20px; }
h3 { margin: 0 0 8px; font-size: 16px; }
code, .evidence { font: 13px/1.45 ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; }
.verdict { display: inline-block; margin: 0 0 16px; padding: 6px 12px; border-radius: 6px; font-weight: 600; }
.meta { display: grid; grid-template-columns: max-content 1fr; gap: 2px 16px; margin: 0 0 16px; font-size: 14px; }
.meta dt { color: var(--muted); }
.meta dd { margin: 0; overflow-wrap: anywhere; }
.counts { display: flex; flex-wrap: wrap; gap: 12px; margin: 0; padding: 0; list-style: none; }
.counts li { min-width: 150px; padding: 12px 16px; border: 1px solid var(--line); border-radius: 8px; }
.counts .n { display: block; font-size: 26px; font-weight: 700; }
.table-wrap { overflow-x: auto; }
table { border-collapse: collapse; width: 100%; font-size: 14px; }
caption { caption-side: top; text-align: left; padding: 0 0 8px; color: var(--muted); }
th, td { padding: 6px 10px; border-bottom: 1px solid var(--line); text-align: left; vertical-align: top; }
thead th { background: var(--panel); border-bottom: 2px solid var(--line); white-space: nowrap; }
tbody th { font-weight: 400; }
.group th { background: var(--panel); font-weight: 600; }
.matrix td.cell { text-align: center; font-size: 16px; font-weight: 700; white-space: nowrap; }
.matrix th[scope=row] code { display: block; }
.matrix .title { color: var(--muted); }
.weak { background: var(--weak-bg); color: var(--weak); }
.enforced { background: var(--ok-bg); color: var(--ok); }
.inconclusive { background: var(--unsure-bg); color: var(--unsure); }
.skipped { color: var(--skip); }
.sev { display: inline-block; padding: 0 8px; border-radius: 10px; font-size: 12px; font-weight: 600; color: #fff; white-space: nowrap; }
.sev-critical { background: #82071e; } .sev-high { background: #b42318; } .sev-medium { background: #7d4e00; } .sev-low { background: #0550ae; }
.finding { margin: 0 0 16px; padding: 16px; border: 1px solid var(--line); border-left: 4px solid var(--weak); border-radius: 8px; background: #fff; color: var(--text); }
.finding dl { display: grid; grid-template-columns: max-content 1fr; gap: 4px 16px; margin: 0; }
.finding dt { color: var(--muted); }
.finding dd { margin: 0; overflow-wrap: anywhere; }
.evidence { display: block; padding: 8px 10px; background: var(--panel); border-radius: 6px; white-space: pre-wrap; overflow-wrap: anywhere; }
details { margin-top: 24px; }
summary { cursor: pointer; font-weight: 600; }
.sr { position: absolute; width: 1px; height: 1px; margin: -1px; padding: 0; overflow: hidden; clip: rect(0 0 0 0); white-space: nowrap; border: 0; }
footer { margin-top: 48px; padding-top: 16px; padding-bottom: 32px; border-top: 1px solid var(--line); color: var(--muted); font-size: 13px; }
@media print { .table-wrap { overflow: visible; } .finding { break-inside: avoid; } }
`;

export function renderHtml(report: ScanReport): string {
  const styleHash = createHash('sha256').update(CSS).digest('base64');
  const csp = `default-src 'none'; style-src 'sha256-${styleHash}'; base-uri 'none'; form-action 'none'`;
  const verdict = VERDICT_OUTCOME[report.exitCode];
  return `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta http-equiv="Content-Security-Policy" content="${csp}">
<meta name="referrer" content="no-referrer">
<title>Lockstep scan of ${h(report.trustDomain)} — run ${h(report.runId)}</title>
<style>${CSS}</style>
</head>
<body>
<header>
<p class="eyebrow">Lockstep scan report</p>
<h1>${h(report.trustDomain)}</h1>
<p class="verdict ${verdict}"><span aria-hidden="true">${OUTCOME_MARK[verdict]}</span> Exit ${h(String(report.exitCode))}: ${h(exitMeaning(report.exitCode))}</p>
<dl class="meta">
${meta([
  ['Run', report.runId],
  ['Scanner', report.scanner],
  ['Started', report.startedAt],
  ['Finished', report.finishedAt],
  ['Duration', formatDuration(report.durationMs)],
  ['Tool', `${report.tool.name} ${report.tool.version}`],
])}
</dl>
</header>
<main>
${summarySection(report)}
${matrixSection(report)}
${findingsSection(findingsOf(report, 'weak'))}
${inconclusiveSection(report, findingsOf(report, 'inconclusive'))}
${skippedSection(findingsOf(report, 'skipped'))}
${servicesSection(report)}
${catalogueSection(report.attacks)}
</main>
<footer>Generated by ${h(report.tool.name)} ${h(report.tool.version)} from run ${h(report.runId)}. Evidence is shown as captured; control characters are written as escapes.</footer>
</body>
</html>
`;
}

function summarySection(report: ScanReport): string {
  const { enforced, weak, inconclusive, skipped } = report.summary;
  const item = (outcome: Outcome, count: number, label: string) =>
    `<li class="${count > 0 ? outcome : ''}"><span class="n">${h(String(count))}</span><span aria-hidden="true">${OUTCOME_MARK[outcome]}</span> ${label}</li>`;
  return `<section aria-labelledby="summary">
<h2 id="summary">Summary</h2>
<ul class="counts">
${item('weak', weak, 'weak')}
${item('inconclusive', inconclusive, 'inconclusive')}
${item('enforced', enforced, 'enforced')}
${item('skipped', skipped, 'skipped (not applicable)')}
</ul>
<p>${report.services.length} services, ${report.attacks.length} attacks, ${report.results.length} attempts.</p>
</section>`;
}

function matrixSection(report: ScanReport): string {
  const matrix = scanMatrix(report);
  const columns = 2 + matrix.services.length;
  const legend = (['enforced', 'weak', 'inconclusive', 'skipped'] as const)
    .map((outcome) => `${OUTCOME_MARK[outcome]} ${CELL_MEANING[outcome]}`)
    .join(', ');
  const body = matrix.groups
    .map(
      (group) => `<tbody>
<tr class="group"><th scope="colgroup" colspan="${columns}">${h(CATEGORY_LABEL[group.category])}</th></tr>
${group.rows.map(({ attack, cells }) => `<tr><th scope="row"><code>${h(attack.id)}</code> <span class="title">${h(attack.title)}</span></th><td>${severity(attack)}</td>${cells.map((outcome, i) => cell(outcome, matrix.services[i] ?? '')).join('')}</tr>`).join('\n')}
</tbody>`,
    )
    .join('\n');
  return `<section aria-labelledby="matrix">
<h2 id="matrix">Attack × service matrix</h2>
<div class="table-wrap">
<table class="matrix">
<caption>Each cell is one attack against one service over all its targets: ${h(legend)}.</caption>
<thead><tr><th scope="col">Attack</th><th scope="col">Severity</th>${matrix.services.map((service) => `<th scope="col">${h(service)}</th>`).join('')}</tr></thead>
${body}
</table>
</div>
</section>`;
}

function cell(outcome: Outcome, service: string): string {
  return `<td class="cell ${h(outcome)}" title="${h(`${service}: ${CELL_MEANING[outcome]}`)}"><span aria-hidden="true">${OUTCOME_MARK[outcome]}</span><span class="sr">${h(CELL_MEANING[outcome])}</span></td>`;
}

function findingsSection(findings: readonly Finding[]): string {
  const articles = findings.map(
    ({ result, attack }) => `<article class="finding">
<h3><span aria-hidden="true">${OUTCOME_MARK.weak}</span> <code>${h(attack.id)}</code> ${h(attack.title)}</h3>
<dl>
<dt>Service</dt><dd>${h(result.service)}</dd>
<dt>Target</dt><dd><code>${h(result.target)}</code></dd>
<dt>Severity</dt><dd>${severity(attack)}</dd>
<dt>Evidence</dt><dd><code class="evidence">${h(result.evidence)}</code></dd>
<dt>Response</dt><dd>${h(responseLine(result))}</dd>
<dt>Enforced when</dt><dd>${h(attack.enforced)}</dd>
<dt>Standards</dt><dd>${h(standards(attack))}</dd>
</dl>
</article>`,
  );
  return `<section aria-labelledby="weak">
<h2 id="weak">Weak links (${findings.length})</h2>
${articles.length > 0 ? articles.join('\n') : '<p>None: no attack got further than it should.</p>'}
</section>`;
}

function inconclusiveSection(report: ScanReport, findings: readonly Finding[]): string {
  if (findings.length === 0) return '';
  const reasons = report.inconclusiveReasons.map(({ reason, results }) => {
    return `<li><strong>${h(String(results))} ${results === 1 ? 'check' : 'checks'}:</strong> ${h(reason)}</li>`;
  });
  return `<section aria-labelledby="inconclusive">
<h2 id="inconclusive">Inconclusive (${findings.length})</h2>
<p>These checks apply but could not run, or the scanner could not tell whether they were enforced,
so the scan is inconclusive. Why:</p>
<ul>
${reasons.join('\n')}
</ul>
${attemptTable('Inconclusive attempts', findings)}
</section>`;
}

function skippedSection(findings: readonly Finding[]): string {
  if (findings.length === 0) return '';
  return `<details>
<summary>Skipped as not applicable (${findings.length})</summary>
${attemptTable('Skipped attempts and why', findings)}
</details>`;
}

function attemptTable(caption: string, findings: readonly Finding[]): string {
  return `<div class="table-wrap">
<table>
<caption>${h(caption)}</caption>
<thead><tr><th scope="col">Service</th><th scope="col">Target</th><th scope="col">Attack</th><th scope="col">Evidence</th></tr></thead>
<tbody>
${findings.map(({ result, attack }) => `<tr><td>${h(result.service)}</td><td><code>${h(result.target)}</code></td><th scope="row"><code>${h(attack.id)}</code> ${h(attack.title)}</th><td><code class="evidence">${h(result.evidence)}</code></td></tr>`).join('\n')}
</tbody>
</table>
</div>`;
}

function servicesSection(report: ScanReport): string {
  return `<section aria-labelledby="services">
<h2 id="services">Services scanned</h2>
<div class="table-wrap">
<table>
<caption>Where each service came from and what the scanner was allowed to reach.</caption>
<thead><tr><th scope="col">Service</th><th scope="col">SPIFFE ID</th><th scope="col">Endpoints</th><th scope="col">Routes</th><th scope="col">Source</th></tr></thead>
<tbody>
${report.services.map((service) => `<tr><th scope="row">${h(service.name)}</th><td><code>${h(service.spiffeId ?? '—')}</code></td><td>${service.endpoints.map((endpoint) => `<code>${h(endpoint)}</code>`).join(' ')}</td><td>${h(String(service.routes))}</td><td>${h(service.source)}</td></tr>`).join('\n')}
</tbody>
</table>
</div>
</section>`;
}

function catalogueSection(attacks: readonly AttackInfo[]): string {
  return `<section aria-labelledby="catalogue">
<h2 id="catalogue">Attacks and standards</h2>
<div class="table-wrap">
<table>
<caption>Every attack that ran, the standards it maps to (CWE, OWASP API Security Top 10 2023, NIST SP 800-204) and what counts as enforced.</caption>
<thead><tr><th scope="col">Attack</th><th scope="col">Category</th><th scope="col">Severity</th><th scope="col">CWE</th><th scope="col">OWASP API Top 10</th><th scope="col">NIST SP 800-204</th><th scope="col">Enforced when</th></tr></thead>
<tbody>
${attacks.map((attack) => `<tr><th scope="row"><code>${h(attack.id)}</code><br>${h(attack.title)}</th><td>${h(CATEGORY_LABEL[attack.category])}</td><td>${severity(attack)}</td><td>${h(attack.cwe.join(', ') || '—')}</td><td>${h(attack.owasp ?? '—')}</td><td>${h(attack.nist ?? '—')}</td><td>${h(attack.enforced)}</td></tr>`).join('\n')}
</tbody>
</table>
</div>
</section>`;
}

function severity(attack: AttackInfo): string {
  return `<span class="sev sev-${h(attack.severity)}">${h(attack.severity)}</span>`;
}

function responseLine(result: Finding['result']): string {
  return [
    result.status === null ? 'no HTTP status' : `status ${result.status}`,
    result.reason === null ? null : `reason ${result.reason}`,
    result.requestId === null ? null : `request id ${result.requestId}`,
    formatDuration(result.durationMs),
  ]
    .filter((part) => part !== null)
    .join(' · ');
}

function standards(attack: AttackInfo): string {
  const parts = [...attack.cwe];
  if (attack.owasp !== null) parts.push(`OWASP ${attack.owasp}`);
  if (attack.nist !== null) parts.push(`NIST SP 800-204: ${attack.nist}`);
  return parts.length > 0 ? parts.join(' · ') : '—';
}

function meta(entries: readonly (readonly [string, string])[]): string {
  return entries.map(([term, value]) => `<dt>${h(term)}</dt><dd>${h(value)}</dd>`).join('\n');
}

/** Every value from the report goes through here: made printable, then HTML-escaped. */
function h(value: string): string {
  return printable(value).replace(/[&<>"']/g, (char) => HTML_ESCAPES[char] ?? char);
}
