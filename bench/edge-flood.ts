/**
 * `npm run bench:edge` — what a bounded flood of anonymous requests does to signed-in users at the shop's
 * edge. Issue 14 saw four clients sending 1 MB each to POST /logout push real users' median from 12.6 ms
 * to 1.6 s, because the gateway read and parsed every body before it looked for a session.
 *
 * The whole shop runs as `npm start` runs it (control plane and four services, each its own process, free
 * loopback ports). Four signed-in sessions call GET /api/orders (session, token exchange at the control
 * plane, orders: the full path), each once every 250 ms — a person's pace, within the per-session budget.
 * Each round measures them three times in turn, the order rotating: no flood, the upload flood, the GET
 * flood (bench/lib/edge-flooder.ts: its own process, its own loopback address, 4 clients, bounded in time
 * and count). A round's ratio is the users' median latency under a flood ÷ their median without, in the
 * same round; the headline is the median over rounds. Every user call must succeed, or the run fails.
 * Writes its section of docs/benchmarks.md; progress goes to stderr, the last line of stdout is JSON.
 *
 *   BENCH_EDGE_ROUNDS (default 5), BENCH_EDGE_SECONDS (measured window, default 5)
 */
import { fork } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import os from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Agent, request } from 'undici';
import { createTestBrowser } from '@lockstep/testkit';
import { freePortBase, startShop, type RunningShop } from '../examples/shop/launch.ts';
import { edgeLimits } from '../examples/shop/services/edge-limits.ts';
import { writeSection } from './lib/docs-section.ts';
import type { FloodJob, FloodReport } from './lib/edge-flooder.ts';

const DOCS_FILE = fileURLToPath(new URL('../docs/benchmarks.md', import.meta.url));
const FLOODER = fileURLToPath(new URL('./lib/edge-flooder.ts', import.meta.url));
const ROUNDS = whole('BENCH_EDGE_ROUNDS', 5, 1, 20);
const SECONDS = whole('BENCH_EDGE_SECONDS', 5, 1, 60);
const USERS = 4;
const PACE_MS = 250;
const FLOOD_CLIENTS = 4;
const FLOOD_FROM = '127.0.0.2';
// The flood runs a little longer than the window on both sides, so that the window sees it at full strength.
const FLOOD_LEAD_MS = 500;
type Condition = 'none' | FloodJob['kind'];
const CONDITIONS: readonly Condition[] = ['none', 'upload', 'get'];
const LABELS: Record<Condition, string> = {
  none: 'no flood',
  upload: `upload flood: ${FLOOD_CLIENTS} clients, 1 MiB to POST /logout without a session, a fresh connection each`,
  get: `GET flood: ${FLOOD_CLIENTS} clients, anonymous GET /api/orders on keep-alive connections, back to back`,
};
const progress = (line: string) => console.error(`[bench:edge] ${line}`);

function whole(name: string, fallback: number, min: number, max: number): number {
  const raw = process.env[name];
  const value = raw === undefined || raw === '' ? fallback : Number(raw);
  if (!Number.isInteger(value) || value < min || value > max)
    throw new TypeError(
      `${name} must be a whole number from ${min} to ${max}, e.g. ${name}=${fallback}; got ${JSON.stringify(raw)}`,
    );
  return value;
}

const median = (values: readonly number[]) => quantile(values, 0.5);
function quantile(values: readonly number[], q: number): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))] ?? Number.NaN;
}

interface Window {
  readonly latencies: number[];
  readonly flood: FloodReport | null;
  /** Busy share of all the machine's cores during the measured window, from os.cpus(). */
  readonly machineBusy: number;
}

function cpuTimes(): { busy: number; total: number } {
  let busy = 0;
  let total = 0;
  for (const { times } of os.cpus()) {
    const sum = times.user + times.nice + times.sys + times.irq + times.idle;
    total += sum;
    busy += sum - times.idle;
  }
  return { busy, total };
}

function startFlood(job: FloodJob): Promise<{ report: Promise<FloodReport> }> {
  const child = fork(FLOODER, [JSON.stringify(job)], { execArgv: [], stdio: ['ignore', 'ignore', 'inherit', 'ipc'] });
  const deadline = setTimeout(() => child.kill('SIGKILL'), job.seconds * 1000 + 30_000);
  return new Promise((resolveStarted, rejectStarted) => {
    const report = new Promise<FloodReport>((resolveReport, rejectReport) => {
      child.on('message', (message: { started?: boolean; report?: FloodReport }) => {
        if (message.started === true) resolveStarted({ report });
        if (message.report !== undefined) {
          clearTimeout(deadline);
          resolveReport(message.report);
        }
      });
      child.once('exit', (code) => {
        clearTimeout(deadline);
        const error = new Error(`the flooder exited (${String(code)}) without a report`);
        rejectStarted(error);
        rejectReport(error);
      });
    });
  });
}

async function measure(shop: RunningShop, cookies: readonly string[], condition: Condition): Promise<Window> {
  const port = Number(new URL(shop.urls.gateway).port);
  const flood =
    condition === 'none'
      ? null
      : await startFlood({
          port,
          kind: condition,
          from: FLOOD_FROM,
          clients: FLOOD_CLIENTS,
          seconds: SECONDS + (2 * FLOOD_LEAD_MS) / 1000,
          maxRequests: 200_000,
        });
  if (flood !== null) await new Promise((resolve) => setTimeout(resolve, FLOOD_LEAD_MS));
  const latencies: number[] = [];
  const agent = new Agent();
  const until = performance.now() + SECONDS * 1000;
  const cpuBefore = cpuTimes();
  let machineBusy = Number.NaN;
  try {
    await Promise.all(
      cookies.map(async (cookie, index) => {
        // Staggered, so that the users' calls are spread over each pace interval.
        await new Promise((resolve) => setTimeout(resolve, (PACE_MS / cookies.length) * index));
        for (let next = performance.now(); next < until; next += PACE_MS) {
          const wait = next - performance.now();
          if (wait > 0) await new Promise((resolve) => setTimeout(resolve, wait));
          const started = performance.now();
          const answer = await request(`http://127.0.0.1:${port}/api/orders`, {
            dispatcher: agent,
            headers: { cookie },
          });
          await answer.body.dump();
          if (answer.statusCode !== 200)
            throw new Error(
              `a signed-in user's GET /api/orders answered ${answer.statusCode} (${condition}): the run is invalid`,
            );
          latencies.push(performance.now() - started);
        }
      }),
    );
    const cpuAfter = cpuTimes();
    machineBusy = (cpuAfter.busy - cpuBefore.busy) / (cpuAfter.total - cpuBefore.total);
  } finally {
    await agent.close();
  }
  return { latencies, machineBusy, flood: flood === null ? null : await flood.report };
}

async function signIn(shop: RunningShop, dataDir: string): Promise<string[]> {
  const cookies: string[] = [];
  for (let i = 0; i < USERS; i += 1) {
    const browser = createTestBrowser({ ca: readFileSync(join(dataDir, 'bundle.pem'), 'utf8') });
    try {
      const login = await browser.open(`${shop.urls.gateway}/login`);
      const done = await browser.submit(login, { username: 'alice', password: shop.users.alice?.password ?? '' });
      if (done.url !== `${shop.urls.gateway}/`) throw new Error(`could not sign in: ${done.status} at ${done.url}`);
      const id = browser.cookies(new URL(shop.urls.gateway).host).shop_session;
      if (id === undefined) throw new Error('signed in, but no session cookie');
      cookies.push(`shop_session=${id}`);
    } finally {
      await browser.close();
    }
  }
  return cookies;
}

const ms = (value: number) => value.toFixed(1);
const count = (value: number) => Math.round(value).toLocaleString('en-US');

async function main(): Promise<void> {
  const dataDir = mkdtempSync(join(os.tmpdir(), 'lockstep-bench-edge-'));
  const load = os.loadavg();
  const started = Date.now();
  let shop: RunningShop | undefined;
  try {
    progress('starting the shop');
    shop = await startShop({ dataDir, portBase: await freePortBase(), onProgress: progress });
    const cookies = await signIn(shop, dataDir);
    progress(`${USERS} sessions signed in; warming up`);
    await measure(shop, cookies, 'none');

    const rounds: Record<Condition, Window>[] = [];
    for (let round = 0; round < ROUNDS; round += 1) {
      const order = CONDITIONS.map((_, index) => CONDITIONS[(index + round) % CONDITIONS.length] as Condition);
      const windows = {} as Record<Condition, Window>;
      for (const condition of order) windows[condition] = await measure(shop, cookies, condition);
      rounds.push(windows);
      progress(
        `round ${round + 1}/${ROUNDS} (${order.join(', ')}): median ${CONDITIONS.map((condition) => `${condition} ${ms(median(windows[condition].latencies))} ms`).join(', ')}`,
      );
    }

    const ratio = (condition: Condition) =>
      median(rounds.map((windows) => median(windows[condition].latencies) / median(windows.none.latencies)));
    const all = (condition: Condition) => rounds.flatMap((windows) => windows[condition].latencies);
    const floods = (condition: Condition) =>
      rounds.map((windows) => windows[condition].flood).filter((report) => report !== null);
    const statusShare = (condition: Condition) => {
      const totals: Record<string, number> = {};
      for (const report of floods(condition))
        for (const [status, n] of Object.entries(report.statuses)) totals[status] = (totals[status] ?? 0) + n;
      const sum = Object.values(totals).reduce((a, b) => a + b, 0);
      return Object.entries(totals)
        .sort(([, a], [, b]) => b - a)
        .map(([status, n]) => `${status === '0' ? 'no answer read' : status} ${((100 * n) / sum).toFixed(1)} %`)
        .join(', ');
    };
    const floodRate = (condition: Condition) =>
      floods(condition).reduce((sum, report) => sum + report.sent, 0) /
      floods(condition).reduce((sum, report) => sum + report.elapsedMs / 1000, 0);
    const floodCores = (condition: Condition) =>
      floods(condition).reduce((sum, report) => sum + report.cpuMicros / 1000, 0) /
      floods(condition).reduce((sum, report) => sum + report.elapsedMs, 0);
    const busy = (condition: Condition) => median(rounds.map((windows) => windows[condition].machineBusy));
    const limits = edgeLimits({});
    const percent = (share: number) => `${(100 * share).toFixed(0)} %`;
    const rows = CONDITIONS.map(
      (condition) =>
        `| ${LABELS[condition]} | ${count(all(condition).length)} | ${ms(median(all(condition)))} | ${ms(quantile(all(condition), 0.95))} | ${condition === 'none' ? '1.00' : ratio(condition).toFixed(2)} | ${percent(busy(condition))} | ${condition === 'none' ? '—' : `${count(floodRate(condition))}/s; ${statusShare(condition)}; the flooder itself used ${floodCores(condition).toFixed(2)} cores`} |`,
    );
    const perRound = rounds.map(
      (windows, index) =>
        `| ${index + 1} | ${CONDITIONS.map((condition) => ms(median(windows[condition].latencies))).join(' | ')} | ${(median(windows.upload.latencies) / median(windows.none.latencies)).toFixed(2)} | ${(median(windows.get.latencies) / median(windows.none.latencies)).toFixed(2)} |`,
    );
    const markdown = [
      '## Edge: signed-in users during a flood of anonymous requests',
      '',
      `Written by \`npm run bench:edge\` (bench/edge-flood.ts); re-run it to refresh this section. Node ${process.version}, ${os.cpus()[0]?.model ?? 'unknown CPU'}, ${os.availableParallelism()} cores; ${new Date().toISOString()}; load average ${load.map((value) => value.toFixed(2)).join(' / ')} before the run; ${Math.round((Date.now() - started) / 1000)} s.`,
      '',
      `The whole shop, as \`npm start\` runs it, on loopback. ${USERS} signed-in sessions call GET /api/orders (session, Txn-Token exchange at the control plane, orders) once every ${PACE_MS} ms each; ${ROUNDS} rounds, each measuring them for ${SECONDS} s with no flood, under the upload flood and under the GET flood, the order rotating. The flood comes from its own process and loopback address, as in issue 14 (there, four clients sending 1 MB to POST /logout took real users' median from 12.6 ms to 1.6 s: ×127). The gateway's budgets are the defaults: ${limits.anonymousPerMinute} requests a minute per anonymous address, ${limits.sessionPerMinute} per session. Every user call answered 200.`,
      '',
      '| Condition | user calls | median ms | p95 ms | median ratio vs no flood (same round) | machine busy | flood: sent, answers, its own CPU |',
      '| --- | ---: | ---: | ---: | ---: | ---: | --- |',
      ...rows,
      '',
      `- upload flood: users' median **×${ratio('upload').toFixed(2)}** (median over rounds of the same-round ratio); GET flood: **×${ratio('get').toFixed(2)}**`,
      `- The flooder shares the machine's ${os.availableParallelism()} cores with the shop: the CPU it uses itself (last column) is taken from the shop as well, so the ratios bound the gateway's own share from above. "No answer read": the gateway answered and closed without reading the upload, and the flooder's next write failed before it read the answer.`,
      '',
      '| Round | no flood, median ms | upload flood | GET flood | upload ÷ none | GET ÷ none |',
      '| ---: | ---: | ---: | ---: | ---: | ---: |',
      ...perRound,
    ].join('\n');
    writeSection(DOCS_FILE, 'edge', markdown);
    process.stdout.write(`${markdown}\n`);
    process.stdout.write(
      `${JSON.stringify({ medianMsNoFlood: Number(ms(median(all('none')))), uploadFloodRatio: Number(ratio('upload').toFixed(2)), getFloodRatio: Number(ratio('get').toFixed(2)) })}\n`,
    );
  } finally {
    await shop?.stop();
    rmSync(dataDir, { recursive: true, force: true });
  }
}

await main();
