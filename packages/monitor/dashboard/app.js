// The Lockstep dashboard: one page, no framework, no assets from elsewhere. It reads the control
// plane's read-only API (/dashboard/api/…) and refreshes the page it shows every 2 seconds.
const page = document.getElementById('page');
let timer = null;

const el = (tag, attributes = {}, ...children) => {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) node.setAttribute(name, value);
  for (const child of children)
    node.append(child instanceof Node ? child : document.createTextNode(String(child ?? '')));
  return node;
};
const svg = (tag, attributes = {}, text) => {
  const node = document.createElementNS('http://www.w3.org/2000/svg', tag);
  for (const [name, value] of Object.entries(attributes)) node.setAttribute(name, value);
  if (text !== undefined) node.textContent = text;
  return node;
};
const table = (headings, rows) =>
  el(
    'table',
    {},
    el('thead', {}, el('tr', {}, ...headings.map((heading) => el('th', { scope: 'col' }, heading)))),
    el('tbody', {}, ...rows),
  );

async function api(path) {
  const response = await fetch(`/dashboard/api/${path}`, { credentials: 'same-origin' });
  if (response.status === 401) {
    window.location.href = '/dashboard/login';
    return null;
  }
  return response.json();
}

// A scan report never changes once stored: each is fetched once, not on every refresh.
const scanReports = new Map();
const SCAN_STATUS = { passed: 'passed', weak: 'weak links found', incomplete: 'inconclusive' };
// Symbol and word: the matrix does not speak in colour only.
const OUTCOMES = { weak: '✗', inconclusive: '?', enforced: '✓', skipped: '–' };
// Evidence is what a scanned service answered: control and bidi-override characters (and lone
// surrogates) are shown as escapes, so that an answer cannot reorder or hide what the page says.
const printable = (text) =>
  String(text ?? '').replace(
    // eslint-disable-next-line no-control-regex -- matching control characters is the point
    /[\u0000-\u001f\u007f-\u009f\u200e\u200f\u202a-\u202e\u2066-\u2069]|[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/g,
    (char) => `\\u${char.charCodeAt(0).toString(16).padStart(4, '0')}`,
  );
const scanBadge = (status) => el('span', { class: `badge ${status}` }, SCAN_STATUS[status] ?? status);

/** One run: the service × attack matrix, then the weak links (and what could not be told) with their evidence. */
async function scanRun(runId) {
  let run = scanReports.get(runId);
  if (run === undefined) {
    run = await api(`scans/${encodeURIComponent(runId)}`);
    if (run === null || run.report === undefined) return [];
    scanReports.set(runId, run);
  }
  const { report } = run;
  const titles = new Map(report.attacks.map((attack) => [attack.id, attack]));
  const services = [
    ...new Set([...report.services.map((service) => service.name), ...report.results.map((result) => result.service)]),
  ];
  const attacks = [
    ...new Set([...report.attacks.map((attack) => attack.id), ...report.results.map((result) => result.attack)]),
  ];
  const cells = new Map();
  for (const result of report.results) {
    const key = `${result.service} ${result.attack}`;
    cells.set(key, [...(cells.get(key) ?? []), result]);
  }
  const cell = (service, attack) => {
    const results = cells.get(`${service} ${attack}`) ?? [];
    if (results.length === 0) return el('td', { class: 'outcome', title: 'not run' }, '');
    // A cell shows the worst of its targets: one weak route makes the service weak against the attack.
    const outcome = Object.keys(OUTCOMES).find((name) => results.some((result) => result.outcome === name));
    const count = results.filter((result) => result.outcome === outcome).length;
    return el(
      'td',
      {
        class: `outcome ${outcome}`,
        title: `${titles.get(attack)?.title ?? attack} on ${service}: ${outcome} (${count} of ${results.length} target${results.length === 1 ? '' : 's'})`,
      },
      OUTCOMES[outcome],
      el('span', { class: 'sr-only' }, ` ${outcome}`),
      results.length > 1 ? ` ${count}/${results.length}` : '',
    );
  };
  // One row per attack (there are dozens), one column per service (a handful).
  const matrix = el(
    'table',
    { class: 'matrix' },
    el(
      'caption',
      {},
      'Each attack against each service: ✓ enforced, ✗ weak, ? inconclusive, – skipped, blank not run. With several targets, the worst outcome and how many targets had it.',
    ),
    el(
      'thead',
      {},
      el(
        'tr',
        {},
        el('th', { scope: 'col' }, 'Attack'),
        el('th', { scope: 'col' }, 'Severity'),
        ...services.map((service) => el('th', { scope: 'col', 'data-service': service }, service)),
      ),
    ),
    el(
      'tbody',
      {},
      ...attacks.map((attack) =>
        el(
          'tr',
          { 'data-attack': attack },
          el(
            'th',
            { scope: 'row', title: titles.get(attack)?.description ?? '' },
            el('code', {}, attack),
            ' ',
            titles.get(attack)?.title ?? '',
          ),
          el(
            'td',
            {},
            titles.get(attack)
              ? el('span', { class: `badge ${titles.get(attack).severity}` }, titles.get(attack).severity)
              : '',
          ),
          ...services.map((service) => cell(service, attack)),
        ),
      ),
    ),
  );
  const finding = (result) => {
    const info = titles.get(result.attack);
    return el(
      'li',
      { 'data-attack': result.attack, 'data-service': result.service },
      info ? el('span', { class: `badge ${info.severity}` }, info.severity) : '',
      ' ',
      el('strong', {}, `${result.service}: ${info?.title ?? result.attack}`),
      ` (${result.attack}${info?.cwe?.length ? `, ${info.cwe.join(', ')}` : ''}) on ${printable(result.target)}`,
      el('br'),
      el('code', {}, printable(result.evidence)),
      result.requestId ? el('span', { class: 'muted' }, ` request ${printable(result.requestId)}`) : '',
    );
  };
  const weak = report.results.filter((result) => result.outcome === 'weak');
  const unsure = report.results.filter((result) => result.outcome === 'inconclusive');
  // Why checks could not run, each reason once (scanners older than this field leave it out).
  const reasons = report.inconclusiveReasons ?? [];
  return [
    el('h3', {}, `Run ${report.runId} `, scanBadge(run.status)),
    el(
      'p',
      { class: 'muted' },
      `by ${report.scanner} (sent by ${run.scanner}), ${report.startedAt} to ${report.finishedAt}; ${services.length} services × ${attacks.length} attacks; ${report.tool.name} ${report.tool.version}; exit code ${report.exitCode}`,
    ),
    ...(reasons.length === 0
      ? []
      : [
          el('h3', {}, 'Why the scan is inconclusive'),
          el(
            'ul',
            { class: 'findings', 'data-reasons': '' },
            ...reasons.map(({ reason, results }) =>
              el('li', {}, el('strong', {}, `${results} check${results === 1 ? '' : 's'}: `), printable(reason)),
            ),
          ),
        ]),
    el('div', { class: 'scroll' }, matrix),
    el('h3', {}, `Weak links (${weak.length})`),
    weak.length === 0
      ? el('p', { class: 'ok' }, 'None: no attack got further than it should.')
      : el('ul', { class: 'findings' }, ...weak.map(finding)),
    ...(unsure.length === 0
      ? []
      : [el('h3', {}, `Inconclusive (${unsure.length})`), el('ul', { class: 'findings' }, ...unsure.map(finding))]),
  ];
}

const pages = {
  async overview() {
    const data = await api('overview');
    if (data === null) return [];
    // Deny rates count real requests only; refused connections (no request was read) and a scanner's
    // probes (Probes page) are counted apart.
    const headings = [
      'Service',
      'mTLS',
      'SVID expires',
      'Policy',
      'Mode',
      'Routes',
      'Deny rate',
      'Refused connections',
      'Probes',
      'Status',
    ];
    return [
      el('h2', {}, 'Services'),
      table(
        headings,
        data.services.map((service) =>
          el(
            'tr',
            { 'data-service': service.service },
            el('td', {}, service.service),
            el('td', { class: 'ok' }, 'required'),
            el('td', {}, service.svidExpiresAt),
            el(
              'td',
              { class: service.drift ? 'bad' : 'ok' },
              `${(service.policyVersion ?? 'none').slice(0, 12)}${service.drift ? ' (DRIFT)' : ''}`,
            ),
            el('td', { class: service.mode === 'dry-run' ? 'bad' : '' }, service.mode),
            el('td', {}, service.routes),
            el(
              'td',
              { class: (service.denyRate ?? 0) > 0.2 ? 'bad' : '', 'data-deny-rate': '' },
              service.denyRate === null ? '—' : `${Math.round(service.denyRate * 100)} % of ${service.decisions}`,
            ),
            el('td', { 'data-connections': '' }, service.refusedConnections ?? 0),
            el('td', { 'data-probes': '' }, service.probes > 0 ? el('a', { href: '#probes' }, service.probes) : '0'),
            el('td', { class: service.stale ? 'bad' : 'ok' }, service.stale ? 'silent' : 'reporting'),
          ),
        ),
      ),
    ];
  },
  async graph() {
    const data = await api('graph');
    if (data === null) return [];
    const nodes = [...new Set(data.edges.flatMap((edge) => [edge.from, edge.to]).concat(data.services))].sort();
    const width = 720,
      height = 420,
      radius = 160;
    const at = new Map(
      nodes.map((node, index) => [
        node,
        [
          width / 2 + radius * Math.cos((2 * Math.PI * index) / Math.max(1, nodes.length)),
          height / 2 + radius * Math.sin((2 * Math.PI * index) / Math.max(1, nodes.length)),
        ],
      ]),
    );
    const picture = svg('svg', {
      width,
      height,
      viewBox: `0 0 ${width} ${height}`,
      role: 'img',
      'aria-label': 'Service-to-service calls: green allowed, red denied',
    });
    for (const edge of data.edges) {
      const [x1, y1] = at.get(edge.from);
      const [x2, y2] = at.get(edge.to);
      picture.append(
        svg('line', {
          x1,
          y1,
          x2,
          y2,
          stroke: edge.denied > 0 ? '#dc2626' : '#16a34a',
          'stroke-width': 2 + Math.min(6, Math.log2(1 + edge.allowed + edge.denied)),
          'data-edge': `${edge.from}→${edge.to}`,
        }),
      );
      picture.append(
        svg('text', { x: (x1 + x2) / 2, y: (y1 + y2) / 2 - 4, fill: '#374151' }, `${edge.allowed} ✓ ${edge.denied} ✗`),
      );
    }
    for (const node of nodes) {
      const [x, y] = at.get(node);
      picture.append(svg('circle', { cx: x, cy: y, r: 26, fill: '#e0e7ff', stroke: '#3730a3' }));
      picture.append(svg('text', { x, y: y + 4, 'text-anchor': 'middle' }, node));
    }
    return [el('h2', {}, 'Service graph (last decisions, probes left out)'), picture];
  },
  async events() {
    const params = new URLSearchParams(window.location.hash.split('?')[1] ?? '');
    const data = await api(`events?${params}`);
    if (data === null) return [];
    const form = el('form', { class: 'filters', 'aria-label': 'Filter events' });
    for (const name of ['service', 'decision', 'reason', 'sub', 'txn']) {
      const id = `filter-${name}`;
      form.append(el('label', { for: id }, name), el('input', { id, name, value: params.get(name) ?? '' }));
    }
    form.append(el('button', { type: 'submit' }, 'Filter'));
    form.addEventListener('submit', (event) => {
      event.preventDefault();
      const chosen = new URLSearchParams([...new FormData(form)].filter(([, value]) => value !== ''));
      window.location.hash = `events?${chosen}`;
    });
    return [
      el('h2', {}, 'Events'),
      form,
      table(
        ['Time', 'Service', 'Caller', 'User', 'Action', 'Decision', 'Reason', 'Transaction'],
        data.events.map((event) =>
          el(
            'tr',
            {},
            el('td', {}, event.time),
            el('td', {}, event.service),
            el('td', {}, event.caller ?? '—'),
            el('td', {}, event.sub ?? '—'),
            el('td', {}, event.action ?? ''),
            el('td', { class: event.decision === 'deny' ? 'bad' : 'ok' }, event.decision),
            el('td', {}, event.reason),
            el('td', {}, event.txn ? el('a', { href: `#txn/${event.txn}` }, event.txn.slice(0, 8)) : '—'),
          ),
        ),
      ),
    ];
  },
  async txn() {
    const id = window.location.hash.slice('#txn/'.length);
    const data = await api(`txn/${encodeURIComponent(id)}`);
    if (data === null) return [];
    return [
      el('h2', {}, `Transaction ${id}`),
      el('p', {}, `on behalf of ${data.sub ?? 'nobody'}`),
      el(
        'ol',
        {},
        ...data.hops.map((hop) =>
          el(
            'li',
            { class: hop.decision === 'deny' ? 'bad' : '' },
            `${hop.time}  ${hop.caller ?? 'edge'} → ${hop.service}  ${hop.action ?? ''}: ${hop.decision} (${hop.reason})${hop.probe ? " — a scanner's probe" : ''}`,
          ),
        ),
      ),
    ];
  },
  async probes() {
    const data = await api('probes');
    if (data === null) return [];
    const heading = el('h2', {}, 'Probes');
    const about = el(
      'p',
      { class: 'muted' },
      'Requests a scanner (lockstep scan) sent on purpose, as the guards ' +
        'verified them: its SVID, or a probe proof on a request refused at transport. They count here, never in deny ' +
        'rates, the service graph, the events or the alerts.',
    );
    if (data.total === 0) return [heading, about, el('p', { class: 'muted' }, 'No probes in the newest decisions.')];
    return [
      heading,
      about,
      table(
        ['Service', 'Probes', 'Refused', 'Admitted (never handled)'],
        data.services.map((entry) =>
          el(
            'tr',
            { 'data-probe-service': entry.service },
            el('td', {}, entry.service),
            el('td', {}, entry.probes),
            el('td', {}, entry.denied),
            el('td', {}, entry.admitted),
          ),
        ),
      ),
      table(
        ['Scanner', 'Probes', 'Last'],
        data.scanners.map((entry) =>
          el('tr', {}, el('td', {}, entry.scanner), el('td', {}, entry.probes), el('td', {}, entry.last)),
        ),
      ),
      el('h3', {}, 'Newest probes'),
      table(
        ['Time', 'Service', 'Scanner', 'Decided as', 'Decision', 'Reason'],
        data.events
          .slice(0, 100)
          .map((event) =>
            el(
              'tr',
              {},
              el('td', {}, event.time),
              el('td', {}, event.service),
              el('td', {}, event.probe ?? event.caller ?? '—'),
              el('td', {}, event.probeAs ?? '—'),
              el('td', {}, event.decision),
              el('td', {}, event.reason),
            ),
          ),
      ),
    ];
  },
  async alerts() {
    const data = await api('alerts');
    if (data === null) return [];
    if (data.alerts.length === 0) return [el('h2', {}, 'Alerts'), el('p', { class: 'muted' }, 'No alerts.')];
    return [
      el('h2', {}, 'Alerts'),
      table(
        ['Time', 'Severity', 'Rule', 'Subject', 'What happened'],
        data.alerts.map((alert) =>
          el(
            'tr',
            { 'data-rule': alert.rule },
            el('td', {}, new Date(alert.at).toISOString()),
            el('td', {}, el('span', { class: `badge ${alert.severity}` }, alert.severity)),
            el('td', {}, alert.rule),
            el('td', {}, alert.subject),
            el('td', {}, alert.summary),
          ),
        ),
      ),
    ];
  },
  async scans() {
    const data = await api('scans');
    if (data === null) return [];
    const heading = el('h2', {}, 'Scans');
    if (data.scans.length === 0)
      return [
        heading,
        el('p', { class: 'muted' }, 'No scan results yet: the scanner (lockstep scan) sends its results here.'),
      ];
    // #scans/<runId> selects a run; without one, the newest is shown.
    const wanted = decodeURIComponent(window.location.hash.split('/')[1] ?? '');
    const chosen = data.scans.find((run) => run.runId === wanted) ?? data.scans[0];
    const runs = table(
      ['Started', 'Scanner', 'Duration', 'Result', 'Enforced', 'Weak', 'Inconclusive', 'Skipped'],
      data.scans.map((run) =>
        el(
          'tr',
          { 'data-run': run.runId, ...(run === chosen ? { 'aria-current': 'true' } : {}) },
          el('td', {}, el('a', { href: `#scans/${encodeURIComponent(run.runId)}` }, run.startedAt)),
          el('td', {}, run.scanner),
          el('td', {}, `${(run.durationMs / 1000).toFixed(1)} s`),
          el('td', {}, scanBadge(run.status)),
          el('td', {}, run.summary.enforced),
          el('td', { class: run.summary.weak > 0 ? 'bad' : '' }, run.summary.weak),
          el('td', {}, run.summary.inconclusive),
          el('td', {}, run.summary.skipped),
        ),
      ),
    );
    return [heading, runs, ...(await scanRun(chosen.runId))];
  },
};

async function show() {
  const name = window.location.hash.slice(1).split(/[/?]/)[0] || 'overview';
  const render = pages[name] ?? pages.overview;
  for (const link of document.querySelectorAll('nav a'))
    link.toggleAttribute('aria-current', link.getAttribute('href') === `#${name}`);
  if (document.querySelector('nav a[aria-current]'))
    document.querySelector('nav a[aria-current]').setAttribute('aria-current', 'page');
  try {
    const content = await render();
    page.replaceChildren(...content);
  } catch (error) {
    page.replaceChildren(el('p', { class: 'bad', role: 'alert' }, `Could not load this page: ${error.message}`));
  }
}

async function start() {
  const who = await api('session');
  if (who !== null) document.getElementById('who').textContent = `Signed in as ${who.sub}`;
  window.addEventListener('hashchange', show);
  await show();
  // Live: the page shown is read again every 2 seconds (not while typing a filter).
  timer = setInterval(() => {
    if (!page.contains(document.activeElement)) void show();
  }, 2_000);
}

void start();
void timer;
