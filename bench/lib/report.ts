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
  /** Warm-up of each server's first slice; later slices warm up for `sliceWarmupSeconds`. */
  readonly warmupSeconds: number;
  readonly sliceWarmupSeconds: number;
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
  /** Server CPU per request over the saturated window (all threads, and the main thread alone). */
  readonly serverCpu: ServerCpu | null;
}

/** What an audited server answered over the whole run and what it wrote to its audit file. */
export interface AuditCount {
  readonly variant: Variant;
  readonly requests: number;
  readonly auditLines: number;
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

/** One variant's figures in the round the headline is taken from. */
export interface VariantFigures {
  readonly round: number;
  readonly rps: number;
  readonly p50Ms: number;
  readonly p99Ms: number;
  readonly cpuUs: number | null;
  readonly mainThreadUs: number | null;
  readonly light: { readonly rps: number; readonly p50Ms: number; readonly p99Ms: number };
}

/**
 * The headline comes from the median round: the round whose guarded ÷ bare ratio is the median of
 * all rounds' (the lower one of the two middle rounds for an even count). The variants take turns
 * in every round, so a round's bare and guarded slices ran minutes apart at most, under the same
 * machine conditions; the median keeps one lucky or unlucky round from deciding the result. (The
 * best-of-N this replaces swung by ±0.05 in ratio from run to run, and medians taken per variant
 * swing as much when a slow period hits more slices of one variant than of the other.)
 */
export function medianRound(results: readonly RoundResult[]): Record<Variant, VariantFigures> {
  const rounds = pairedRatios(results).sort((a, b) => a.ratio - b.ratio);
  const chosen = rounds[Math.floor((rounds.length - 1) / 2)];
  if (chosen === undefined) throw new Error('no round in which both bare and guarded ran');
  const figures = {} as Record<Variant, VariantFigures>;
  for (const result of results.filter((candidate) => candidate.round === chosen.round)) {
    figures[result.variant] = {
      round: result.round,
      rps: result.report.rps,
      p50Ms: result.report.p50Ms,
      p99Ms: result.report.p99Ms,
      cpuUs: result.serverCpu?.processUs ?? null,
      mainThreadUs: result.serverCpu?.mainThreadUs ?? null,
      light: { rps: result.light.rps, p50Ms: result.light.p50Ms, p99Ms: result.light.p99Ms },
    };
  }
  return figures;
}

/** Per round, what the guard adds to p99 at light load (guarded − bare of that round). */
function pairedP99Added(results: readonly RoundResult[]): number[] {
  return paired(results, 'guarded').map(({ guarded, bare }) => guarded.light.p99Ms - bare.light.p99Ms);
}

/** Per round, `variant`'s server CPU per request minus bare's. */
function pairedCpuAdded(results: readonly RoundResult[], variant: Variant): number[] {
  return paired(results, variant)
    .filter(({ guarded, bare }) => guarded.serverCpu !== null && bare.serverCpu !== null)
    .map(({ guarded, bare }) => (guarded.serverCpu as ServerCpu).processUs - (bare.serverCpu as ServerCpu).processUs);
}

function paired(
  results: readonly RoundResult[],
  variant: Variant,
): { round: number; guarded: RoundResult; bare: RoundResult }[] {
  const pairs: { round: number; guarded: RoundResult; bare: RoundResult }[] = [];
  for (const guarded of results.filter((result) => result.variant === variant)) {
    const bare = results.find((result) => result.variant === 'bare' && result.round === guarded.round);
    if (bare) pairs.push({ round: guarded.round, guarded, bare });
  }
  return pairs;
}

/** Server CPU per request over the measured windows, paired per round: what the guard costs the server itself. */
function serverCpuLines(results: readonly RoundResult[]): string[] {
  const audited = pairedCpuAdded(results, 'guarded');
  const unaudited = pairedCpuAdded(results, 'guarded-no-sink');
  const bare = results
    .filter((result) => result.variant === 'bare' && result.serverCpu !== null)
    .map((result) => (result.serverCpu as ServerCpu).processUs);
  if (audited.length === 0 || bare.length === 0) return [];
  const bareUs = median(bare);
  const addedUs = median(audited);
  const list = (values: readonly number[]) =>
    values.map((value) => `${value >= 0 ? '+' : ''}${value.toFixed(1)}`).join(', ');
  return [
    `- server CPU per request over the measured windows: bare ${bareUs.toFixed(1)} µs (median of rounds); the guard adds ${list(audited)} µs per round (median **+${addedUs.toFixed(1)} µs**)` +
      `${unaudited.length === 0 ? '' : `, without an audit subscriber ${list(unaudited)} µs (median +${median(unaudited).toFixed(1)} µs)`}; bare ÷ (bare + added) = ${(bareUs / (bareUs + addedUs)).toFixed(3)} — the capacity ratio a server-bound deployment would see`,
  ];
}

/** guarded ÷ bare for each round in which both ran, in round order. */
function pairedRatios(results: readonly RoundResult[]): { round: number; ratio: number }[] {
  return paired(results, 'guarded').map(({ round: n, guarded, bare }) => ({
    round: n,
    ratio: guarded.report.rps / bare.report.rps,
  }));
}

function median(values: readonly number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const middle = Math.floor(sorted.length / 2);
  return sorted.length % 2 === 1
    ? (sorted[middle] as number)
    : ((sorted[middle - 1] as number) + (sorted[middle] as number)) / 2;
}

export function summarize(results: readonly RoundResult[]): Summary {
  const { bare, guarded, naive } = medianRound(results);
  return {
    bareRps: Math.round(bare.rps),
    guardedRps: Math.round(guarded.rps),
    naiveRps: Math.round(naive.rps),
    ratio: round(guarded.rps / bare.rps, 3),
    // The guard's own added latency: measured with one connection, where no queueing hides it. Under
    // saturation, p99 mostly measures the queue that any lower throughput builds (reported separately).
    p99AddedMs: round(median(pairedP99Added(results)), 3),
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

export function renderMarkdown(
  settings: BenchSettings,
  results: readonly RoundResult[],
  served: readonly AuditCount[],
  cold: ColdPathReport,
  admit: AdmitCostReport,
  loadBefore: readonly number[],
  elapsedSeconds: number,
): string {
  const figures = medianRound(results);
  const summary = summarize(results);
  const bareRps = figures.bare.rps;
  const verdict = (ok: boolean) => (ok ? 'met' : '**NOT met**');
  const lines = [
    '# Benchmarks',
    '',
    `Written by \`npm run bench:guard\` (bench/guard.ts); re-run it to refresh this page. Knobs: \`BENCH_SECONDS\` (measured window per slice, default 4),`,
    '`BENCH_ROUNDS` (default 7), `BENCH_CONNECTIONS` (default 16), `BENCH_WARMUP_SECONDS` (first slice of each server, default 5), `BENCH_LIGHT_SECONDS` (default 2);',
    '`BENCH_VARIANTS=guarded` runs a subset for profiling and writes nothing.',
    '',
    ...machine(loadBefore),
    `- This run: every server in a process of its own, all up for the whole run; ${settings.rounds} round(s) in which each variant takes a slice in turn (${VARIANTS.join(', ')}; the order rotates every round, so that all variants meet the machine's slow and fast periods alike). A slice: a fresh load-generator process, ${settings.connections} keep-alive mTLS connections, pipelining 1, warm-up ≥ ${settings.sliceWarmupSeconds} s (${settings.warmupSeconds} s for a server's first slice) and one full rotation of that round's fresh tokens, ${settings.measureSeconds} s measured, then ${settings.lightSeconds} s at light load; total ${Math.round(elapsedSeconds)} s.`,
    '',
    '## Guard in steady state',
    '',
    `\`GET /orders/:id\` on Fastify over HTTPS with a required client certificate (TLS 1.3), driven by a separate load-generator process (undici) presenting the gateway's SVID, cycling through ${settings.tokens.toLocaleString('en-US')} distinct valid Txn-Tokens. The table shows round ${figures.bare.round}, the median round of ${settings.rounds} by guarded ÷ bare (below); every response was 200.`,
    '',
    '| Variant | rps | p50 ms | p99 ms | ratio vs bare | server CPU µs/request | main thread µs/request |',
    '| --- | ---: | ---: | ---: | ---: | ---: | ---: |',
    ...VARIANTS.map((variant) => {
      const figure = figures[variant];
      return `| ${describeVariant(variant)} | ${rps(figure.rps)} | ${ms(figure.p50Ms)} | ${ms(figure.p99Ms)} | ${(figure.rps / bareRps).toFixed(3)} | ${figure.cpuUs === null ? '—' : figure.cpuUs.toFixed(1)} | ${figure.mainThreadUs === null ? '—' : figure.mainThreadUs.toFixed(1)} |`;
    }),
    '',
    `- guarded / bare = **${summary.ratio.toFixed(3)}** (target ≥ ${TARGET_RATIO.toFixed(2)}: ${verdict(summary.ratio >= TARGET_RATIO)}; goal ${GOAL_RATIO.toFixed(2)}: ${verdict(summary.ratio >= GOAL_RATIO)})`,
    `- per round, guarded ÷ that round's bare: ${pairedRatios(results)
      .map(({ round: n, ratio }) => `${ratio.toFixed(3)} (round ${n})`)
      .join(', ')}; the headline is the median`,
    `- p99 added by the guard at light load (one connection, no queueing), median over rounds of guarded − that round's bare (${pairedP99Added(
      results,
    )
      .map((value) => value.toFixed(3))
      .join(
        ', ',
      )}) = **${summary.p99AddedMs.toFixed(3)} ms** (target ≤ ${TARGET_P99_ADDED_MS} ms: ${verdict(summary.p99AddedMs <= TARGET_P99_ADDED_MS)}); under saturation p99 rises by ${(figures.guarded.p99Ms - figures.bare.p99Ms).toFixed(3)} ms, the queue that the lower throughput builds`,
    `- guarded / naive = ${(summary.guardedRps / summary.naiveRps).toFixed(2)}× — what the token and decision caches buy`,
    ...serverCpuLines(results),
    `- guarded without an audit subscriber / bare = ${(figures['guarded-no-sink'].rps / bareRps).toFixed(3)} — enforcement alone; the difference to the audited row is the cost of writing every decision to the JSON-lines file`,
    '',
    'The load is closed-loop (each connection sends its next request when the previous answer arrives), so the',
    "servers run saturated and latency includes queueing: p99 added is the guard's per-request cost plus the",
    'queueing its lower throughput causes.',
    '',
    '### Latency at light load',
    '',
    `One connection, one request at a time (${settings.lightSeconds} s, same servers, tokens already seen): no queueing, so the difference is the guard's own latency. Round ${figures.bare.round}, as above; the headline p99 added is the median over all rounds.`,
    '',
    '| Variant | rps | p50 ms | p99 ms | p99 added vs bare, ms |',
    '| --- | ---: | ---: | ---: | ---: |',
    ...VARIANTS.map((variant) => {
      const { light } = figures[variant];
      return `| ${variant} | ${rps(light.rps)} | ${ms(light.p50Ms)} | ${ms(light.p99Ms)} | ${variant === 'bare' ? '—' : ms(light.p99Ms - figures.bare.light.p99Ms)} |`;
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
    '| Round | Variant | rps | server CPU µs/request | p50 ms | p99 ms | max ms | warm-up s | requests | light p50 ms | light p99 ms |',
    '| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |',
    ...results.map(
      ({ round: n, variant, report, light, serverCpu }) =>
        `| ${n} | ${variant} | ${rps(report.rps)} | ${serverCpu ? serverCpu.processUs.toFixed(1) : '—'} | ${ms(report.p50Ms)} | ${ms(report.p99Ms)} | ${ms(report.maxMs)} | ${report.warmupSeconds.toFixed(1)} | ${report.requests.toLocaleString('en-US')} | ${ms(light.p50Ms)} | ${ms(light.p99Ms)} |`,
    ),
    '',
    ...served.map(
      ({ variant, requests, auditLines }) =>
        `- ${variant}: answered ${requests.toLocaleString('en-US')} requests over the run (warm-up and light load included) and wrote ${auditLines.toLocaleString('en-US')} decision events to its audit file${auditLines === requests ? ' — one per request' : ' — **not one per request**'}.`,
    ),
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
    "- **bare**: Fastify with `https: { cert, key, ca, requestCert: true, rejectUnauthorized: true, minVersion: 'TLSv1.3' }`, no guard.",
    '- **guarded**: `createGuard({ …, audit: { file } })` and `app.register(lockstep, { guard })`, as a user writes it; decision events go to a JSON-lines file.',
    '- **naive**: bare plus an `onRequest` hook that, on every request, verifies the Txn-Token with jose `jwtVerify` (ES256, typ, audience) and asks Cedar (`statefulIsAuthorized`, preparsed policy set) — no token or decision cache.',
    '',
  ];
  return lines.join('\n');
}

function describeVariant(variant: Variant): string {
  switch (variant) {
    case 'bare':
      return 'bare Fastify (mTLS only)';
    case 'guarded':
      return 'guarded (Lockstep, steady state, audit to file)';
    case 'guarded-no-sink':
      return 'guarded, no audit subscriber';
    case 'naive':
      return 'naive (verify + authorize every request)';
  }
}
