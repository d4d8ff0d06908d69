/**
 * The bench's output: markdown for humans (stdout and docs/benchmarks.md) and the one-line JSON
 * summary that CI reads from the last line of stdout.
 */
import os from 'node:os';
import type { AdmitCostReport } from './admit-cost.ts';
import type { ColdPathReport } from './cold-path.ts';
import type { LoadReport } from './protocol.ts';
import { VARIANTS, type Variant } from './servers.ts';

export const TARGET_RATIO = 0.8;
export const GOAL_RATIO = 0.9;
export const TARGET_P99_ADDED_MS = 0.2;

export interface BenchSettings {
  readonly rounds: number;
  readonly connections: number;
  readonly warmupSeconds: number;
  readonly measureSeconds: number;
  readonly lightSeconds: number;
  readonly tokens: number;
  readonly coldTokens: number;
}

export interface ServerCpu {
  readonly processUs: number;
  readonly mainThreadUs: number;
}

export interface RoundResult {
  readonly round: number;
  readonly variant: Variant;
  /** Saturated: `connections` closed loops. */
  readonly report: LoadReport;
  /** Light load: one connection, one request at a time. */
  readonly light: LoadReport;
  /** Guarded only: decision events found in the audit file after the run. */
  readonly auditLines: number | null;
  /** Server CPU per request over the saturated window (all threads, and the main thread alone). */
  readonly serverCpu: ServerCpu | null;
}

export interface Summary {
  readonly bareRps: number;
  readonly guardedRps: number;
  readonly naiveRps: number;
  readonly ratio: number;
  readonly p99AddedMs: number;
}

const round = (value: number, digits: number) => Number(value.toFixed(digits));
const ms = (value: number) => value.toFixed(3);
const rps = (value: number) => Math.round(value).toLocaleString('en-US');

/** Per variant, the round with the highest throughput: on a small noisy machine the best run is the least disturbed one. */
export function bestPerVariant(results: readonly RoundResult[]): Record<Variant, RoundResult> {
  const best = {} as Record<Variant, RoundResult>;
  for (const result of results) {
    const current = best[result.variant];
    if (current === undefined || result.report.rps > current.report.rps) best[result.variant] = result;
  }
  return best;
}

/** Server CPU per request, the steadier measure on a noisy machine: median over rounds per variant. */
function serverCpuLines(results: readonly RoundResult[]): string[] {
  const medianCpu = (variant: Variant) => {
    const samples = results.filter((result) => result.variant === variant && result.serverCpu !== null).map((result) => (result.serverCpu as ServerCpu).processUs);
    return samples.length > 0 ? median(samples) : null;
  };
  const bare = medianCpu('bare');
  const guarded = medianCpu('guarded');
  const unaudited = medianCpu('guarded-no-sink');
  if (bare === null || guarded === null) return [];
  return [
    `- server CPU per request over the measured window (median of rounds): bare ${bare.toFixed(1)} µs, guarded ${guarded.toFixed(1)} µs (+${(guarded - bare).toFixed(1)} µs)` +
      `${unaudited === null ? '' : `, guarded without audit subscriber ${unaudited.toFixed(1)} µs (+${(unaudited - bare).toFixed(1)} µs)`}; bare ÷ guarded = ${(bare / guarded).toFixed(3)} — the capacity ratio a server-bound deployment would see`,
  ];
}

/** guarded ÷ bare for each round in which both ran. */
function pairedRatios(results: readonly RoundResult[]): number[] {
  const ratios: number[] = [];
  for (const guarded of results.filter((result) => result.variant === 'guarded')) {
    const bare = results.find((result) => result.variant === 'bare' && result.round === guarded.round);
    if (bare) ratios.push(guarded.report.rps / bare.report.rps);
  }
  return ratios;
}

function median(values: readonly number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const middle = Math.floor(sorted.length / 2);
  return sorted.length % 2 === 1 ? (sorted[middle] as number) : ((sorted[middle - 1] as number) + (sorted[middle] as number)) / 2;
}

export function summarize(best: Record<Variant, RoundResult>): Summary {
  const { bare, guarded, naive } = best;
  return {
    bareRps: Math.round(bare.report.rps),
    guardedRps: Math.round(guarded.report.rps),
    naiveRps: Math.round(naive.report.rps),
    ratio: round(guarded.report.rps / bare.report.rps, 3),
    // The guard's own added latency: measured with one connection, where no queueing hides it. Under
    // saturation, p99 mostly measures the queue that any lower throughput builds (reported separately).
    p99AddedMs: round(guarded.light.p99Ms - bare.light.p99Ms, 3),
  };
}

function machine(loadBefore: readonly number[]): string[] {
  const cpus = os.cpus();
  const load = (values: readonly number[]) => values.map((value) => value.toFixed(2)).join(' / ');
  return [
    `- Node ${process.version} on ${os.type()} ${os.release()} (${process.arch})`,
    `- CPU: ${cpus[0]?.model ?? 'unknown'}, ${os.availableParallelism()} cores available, ${Math.round(os.totalmem() / 2 ** 30)} GiB RAM`,
    `- Date: ${new Date().toISOString()}; load average (1/5/15 min) ${load(loadBefore)} before the run, ${load(os.loadavg())} after`,
  ];
}

export function renderMarkdown(settings: BenchSettings, results: readonly RoundResult[], cold: ColdPathReport, admit: AdmitCostReport, loadBefore: readonly number[], elapsedSeconds: number): string {
  const best = bestPerVariant(results);
  const summary = summarize(best);
  const bareRps = best.bare.report.rps;
  const verdict = (ok: boolean) => (ok ? 'met' : '**NOT met**');
  const lines = [
    '# Benchmarks',
    '',
    `Written by \`npm run bench:guard\` (bench/guard.ts); re-run it to refresh this page. Knobs: \`BENCH_SECONDS\` (measured window, default 8),`,
    '`BENCH_ROUNDS` (default 3), `BENCH_CONNECTIONS` (default 16), `BENCH_WARMUP_SECONDS` (default 5), `BENCH_LIGHT_SECONDS` (default 3);',
    '`BENCH_VARIANTS=guarded` runs a subset for profiling and writes nothing.',
    '',
    ...machine(loadBefore),
    `- This run: ${settings.rounds} round(s) of ${VARIANTS.join(' → ')}, each server in a process of its own; per variant ${settings.connections} keep-alive mTLS connections, pipelining 1, warm-up ≥ ${settings.warmupSeconds} s and one full token rotation, ${settings.measureSeconds} s measured; then ${settings.lightSeconds} s at light load; total ${Math.round(elapsedSeconds)} s.`,
    '',
    '## Guard in steady state',
    '',
    `\`GET /orders/:id\` on Fastify over HTTPS with a required client certificate (TLS 1.3), driven by a separate load-generator process (undici) presenting the gateway's SVID, cycling through ${settings.tokens.toLocaleString('en-US')} distinct valid Txn-Tokens. Best round per variant (highest rps); every response was 200.`,
    '',
    '| Variant | rps | p50 ms | p99 ms | ratio vs bare | server CPU µs/request | main thread µs/request |',
    '| --- | ---: | ---: | ---: | ---: | ---: | ---: |',
    ...VARIANTS.map((variant) => {
      const { report, serverCpu } = best[variant];
      return `| ${describeVariant(variant)} | ${rps(report.rps)} | ${ms(report.p50Ms)} | ${ms(report.p99Ms)} | ${(report.rps / bareRps).toFixed(3)} | ${serverCpu ? serverCpu.processUs.toFixed(1) : '—'} | ${serverCpu ? serverCpu.mainThreadUs.toFixed(1) : '—'} |`;
    }),
    '',
    `- guarded / bare = **${summary.ratio.toFixed(3)}** (target ≥ ${TARGET_RATIO.toFixed(2)}: ${verdict(summary.ratio >= TARGET_RATIO)}; goal ${GOAL_RATIO.toFixed(2)}: ${verdict(summary.ratio >= GOAL_RATIO)})`,
    `- per round, against that round's bare server: ${pairedRatios(results).map((value) => value.toFixed(3)).join(', ')} (median ${median(pairedRatios(results)).toFixed(3)})`,
    `- p99 added by the guard at light load (one connection, no queueing) = **${summary.p99AddedMs.toFixed(3)} ms** (target ≤ ${TARGET_P99_ADDED_MS} ms: ${verdict(summary.p99AddedMs <= TARGET_P99_ADDED_MS)}); under saturation p99 rises by ${(best.guarded.report.p99Ms - best.bare.report.p99Ms).toFixed(3)} ms, the queue that the lower throughput builds`,
    `- guarded / naive = ${(summary.guardedRps / summary.naiveRps).toFixed(2)}× — what the token and decision caches buy`,
    ...serverCpuLines(results),
    `- guarded without an audit subscriber / bare = ${(best['guarded-no-sink'].report.rps / bareRps).toFixed(3)} — enforcement alone; the difference to the audited row is the cost of writing every decision to the JSON-lines file`,
    '',
    'The load is closed-loop (each connection sends its next request when the previous answer arrives), so the',
    'servers run saturated and latency includes queueing: p99 added is the guard\'s per-request cost plus the',
    'queueing its lower throughput causes.',
    '',
    '### Latency at light load',
    '',
    `One connection, one request at a time (${settings.lightSeconds} s, same servers, tokens already seen): no queueing, so the difference is the guard's own latency. Same rounds as above.`,
    '',
    '| Variant | rps | p50 ms | p99 ms | p99 added vs bare, ms |',
    '| --- | ---: | ---: | ---: | ---: |',
    ...VARIANTS.map((variant) => {
      const { light } = best[variant];
      return `| ${variant} | ${rps(light.rps)} | ${ms(light.p50Ms)} | ${ms(light.p99Ms)} | ${variant === 'bare' ? '—' : ms(light.p99Ms - best.bare.light.p99Ms)} |`;
    }),
    '',
    '### Guard cost per request, in process',
    '',
    `\`guard.pipeline.admit\` in steady state (cached connection identity, token and decision), ${admit.ops.toLocaleString('en-US')} calls, no network — less exposed to a noisy machine than the HTTP numbers:`,
    '',
    `- with the audit file sink subscribed: **${admit.auditedUs.toFixed(1)} µs** per request; with no audit subscriber: ${admit.unauditedUs.toFixed(1)} µs`,
    `- bare Fastify answered one request every ${(1e6 / bareRps).toFixed(0)} µs; adding admit alone to that predicts a ratio of about ${(1e6 / bareRps / (1e6 / bareRps + admit.auditedUs)).toFixed(2)} — an upper bound: inside a busy server the same code runs slower (colder CPU caches), and the Fastify adapter adds its hooks and async context.`,
    '',
    '### Every round',
    '',
    '| Round | Variant | rps | p50 ms | p99 ms | max ms | warm-up s | requests | light p50 ms | light p99 ms | audit events |',
    '| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |',
    ...results.map(({ round: n, variant, report, light, auditLines }) =>
      `| ${n} | ${variant} | ${rps(report.rps)} | ${ms(report.p50Ms)} | ${ms(report.p99Ms)} | ${ms(report.maxMs)} | ${report.warmupSeconds.toFixed(1)} | ${report.requests.toLocaleString('en-US')} | ${ms(light.p50Ms)} | ${ms(light.p99Ms)} | ${auditLines === null ? '—' : auditLines.toLocaleString('en-US')} |`),
    '',
    'Audit events: one per request the guarded server answered, warm-up and light load included.',
    '',
    '## Txn-Token verification, cold and warm',
    '',
    `In process, ${cold.tokens.toLocaleString('en-US')} freshly minted ES256 tokens, each verified once (cold), then ${cold.warmOps.toLocaleString('en-US')} cached verifications (warm).`,
    '',
    '| Path | µs/op | vs raw node:crypto |',
    '| --- | ---: | ---: |',
    `| raw \`crypto.verify\` (split, base64url-decode signature, ECDSA P-256 verify) | ${cold.rawCryptoUs.toFixed(1)} | 1.00 |`,
    `| guard txn-token step, cold (checks + jose \`compactVerify\` + claims + cache insert) | ${cold.guardColdUs.toFixed(1)} | ${cold.coldRatio.toFixed(2)} |`,
    `| guard txn-token step, warm (cache hit + expiry/revocation check) | ${cold.guardWarmUs.toFixed(3)} | ${(cold.guardWarmUs / cold.rawCryptoUs).toFixed(4)} |`,
    '',
    '## Variants',
    '',
    '- **bare**: Fastify with `https: { cert, key, ca, requestCert: true, rejectUnauthorized: true, minVersion: \'TLSv1.3\' }`, no guard.',
    '- **guarded**: `createGuard({ …, audit: { file } })` and `app.register(lockstep, { guard })`, as a user writes it; decision events go to a JSON-lines file.',
    '- **naive**: bare plus an `onRequest` hook that, on every request, verifies the Txn-Token with jose `jwtVerify` (ES256, typ, audience) and asks Cedar (`statefulIsAuthorized`, preparsed policy set) — no token or decision cache.',
    '',
  ];
  return lines.join('\n');
}

function describeVariant(variant: Variant): string {
  switch (variant) {
    case 'bare': return 'bare Fastify (mTLS only)';
    case 'guarded': return 'guarded (Lockstep, steady state, audit to file)';
    case 'guarded-no-sink': return 'guarded, no audit subscriber';
    case 'naive': return 'naive (verify + authorize every request)';
  }
}
