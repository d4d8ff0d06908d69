/**
 * The bench's output: markdown for humans (stdout and docs/benchmarks.md) and the one-line JSON
 * summary that CI reads from the last line of stdout. Every "added" figure is paired: that round's
 * variant minus that round's bare server (the two ran minutes apart at most), and the median over
 * rounds of those differences is reported — the machine drifts too much for medians taken per variant.
 */
import os from 'node:os';
import type { AdmitCostReport } from './admit-cost.ts';
import type { AuditCostReport } from './audit-cost.ts';
import type { CacheBytesReport } from './cache-bytes.ts';
import type { ColdPathReport } from './cold-path.ts';
import { anchorRows, ANCHORS_SOURCE, PUBLISHED_ANCHORS } from './mesh-anchors.ts';
import type { PhaseReport } from './mesh-protocol.ts';
import type { LoadReport } from './protocol.ts';
import type { ServerMemory } from './run-server.ts';
import { VARIANTS, type Variant } from './servers.ts';

/** Throughput, guarded ÷ bare, saturated. */
export const TARGET_RATIO = 0.8;
export const GOAL_RATIO = 0.9;
/** Server process CPU per request, bare ÷ guarded (= bare ÷ (bare + added)), saturated. */
export const TARGET_CPU_RATIO = 0.85;
export const GOAL_CPU_RATIO = 0.9;
/** RSS the guard adds to the server process, MB (10^6 bytes). */
export const TARGET_RSS_ADDED_MB = 20;
/** p99 added per hop in the open loop at OPEN_RATE. */
export const TARGET_P99_ADDED_MS_1000 = 0.2;
export const GOAL_P99_ADDED_MS_1000 = 0.1;
/** p99 added at light load (one connection). */
export const TARGET_P99_ADDED_MS = 0.2;
/** The open loop's fixed rate, requests per second: the meshes publish their figures at this rate. */
export const OPEN_RATE = 1_000;

export interface BenchSettings {
  readonly rounds: number;
  readonly connections: number;
  /** Warm-up of each server's first slice; later slices warm up for `sliceWarmupSeconds`. */
  readonly warmupSeconds: number;
  readonly sliceWarmupSeconds: number;
  readonly measureSeconds: number;
  readonly openSeconds: number;
  readonly openWarmupSeconds: number;
  readonly lightSeconds: number;
  readonly tokens: number;
  readonly coldTokens: number;
}

/** What the server process spent over one measured window, from its own samples at the window's edges. */
export interface WindowCpu {
  /** Process CPU (all threads: main, libuv pool, GC helpers) per request answered, µs. */
  readonly processUs: number;
  /** Main-thread busy time per request, µs: event-loop utilization, wall time (descheduled time included). */
  readonly mainThreadUs: number;
  /** Process CPU seconds per wall second, and requests answered per wall second, over the window. */
  readonly cpuPerSecond: number;
  readonly rps: number;
}

export interface RoundResult {
  readonly round: number;
  readonly variant: Variant;
  /** Saturated: `connections` closed loops. */
  readonly report: LoadReport;
  readonly serverCpu: WindowCpu;
  /** The server's memory at the end of the saturated window. */
  readonly memory: ServerMemory;
  /** Open loop at OPEN_RATE, timed from each request's scheduled send time. */
  readonly open: PhaseReport;
  readonly openCpu: WindowCpu;
  /** Light load: one connection, one request at a time. */
  readonly light: PhaseReport;
}

/** What an audited server answered over the whole run, what the load generators counted, and its audit file. */
export interface AuditCount {
  readonly variant: Variant;
  readonly requests: number;
  readonly answersCounted: number;
  readonly auditLines: number;
}

export interface Summary {
  readonly bareRps: number;
  readonly guardedRps: number;
  readonly naiveRps: number;
  readonly ratio: number;
  readonly p99AddedMs: number;
  readonly cpuRatio: number;
  readonly cpuRatioMainThread: number;
  readonly rssAddedMb: number;
  readonly p50AddedMs1000: number;
  readonly p99AddedMs1000: number;
  readonly vcpuPer1000Rps: number;
}

const round = (value: number, digits: number) => Number(value.toFixed(digits));
const ms = (value: number) => value.toFixed(3);
const signed = (value: number, digits: number) => `${value >= 0 ? '+' : ''}${value.toFixed(digits)}`;
const rps = (value: number) => Math.round(value).toLocaleString('en-US');
const mb = (bytes: number) => (bytes / 1e6).toFixed(1);
const list = (values: readonly number[], digits: number) => values.map((value) => signed(value, digits)).join(', ');

/** CPU seconds per wall second over the window, scaled to OPEN_RATE requests per second. */
export const vcpuPer1000Rps = (cpu: WindowCpu) => (cpu.cpuPerSecond * OPEN_RATE) / cpu.rps;

/** One variant's figures in the round the headline is taken from. */
export interface VariantFigures {
  readonly round: number;
  readonly rps: number;
  readonly p50Ms: number;
  readonly p99Ms: number;
  readonly cpuUs: number;
  readonly mainThreadUs: number;
}

/**
 * The throughput headline comes from the median round: the round whose guarded ÷ bare ratio is the
 * median of all rounds' (the lower one of the two middle rounds for an even count). The variants take
 * turns in every round, so a round's bare and guarded slices ran minutes apart at most, under the same
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
      cpuUs: result.serverCpu.processUs,
      mainThreadUs: result.serverCpu.mainThreadUs,
    };
  }
  return figures;
}

function paired(
  results: readonly RoundResult[],
  variant: Variant,
): { round: number; slice: RoundResult; bare: RoundResult }[] {
  const pairs: { round: number; slice: RoundResult; bare: RoundResult }[] = [];
  for (const slice of results.filter((result) => result.variant === variant)) {
    const bare = results.find((result) => result.variant === 'bare' && result.round === slice.round);
    if (bare) pairs.push({ round: slice.round, slice, bare });
  }
  return pairs;
}

/** Per round in which both ran, in round order: combine(`variant`'s slice, bare's slice of that round). */
function perRound(
  results: readonly RoundResult[],
  variant: Variant,
  combine: (slice: RoundResult, bare: RoundResult) => number,
): number[] {
  return paired(results, variant).map(({ slice, bare }) => combine(slice, bare));
}

/** Median over rounds of pick(`variant`'s slice). */
function medianOf(results: readonly RoundResult[], variant: Variant, pick: (slice: RoundResult) => number): number {
  return median(results.filter((result) => result.variant === variant).map(pick));
}

/** Median over rounds of pick(`variant`'s slice) − pick(bare's slice of the same round). */
function medianAdded(results: readonly RoundResult[], variant: Variant, pick: (slice: RoundResult) => number): number {
  return median(perRound(results, variant, (slice, bare) => pick(slice) - pick(bare)));
}

/** guarded ÷ bare throughput for each round in which both ran, in round order. */
function pairedRatios(results: readonly RoundResult[]): { round: number; ratio: number }[] {
  return paired(results, 'guarded').map(({ round: n, slice, bare }) => ({
    round: n,
    ratio: slice.report.rps / bare.report.rps,
  }));
}

/** Per round, bare ÷ (bare + added) of the server's CPU per request, saturated: bare's ÷ `variant`'s. */
function cpuRatios(results: readonly RoundResult[], variant: Variant, thread: 'processUs' | 'mainThreadUs'): number[] {
  return perRound(results, variant, (slice, bare) => bare.serverCpu[thread] / slice.serverCpu[thread]);
}

function median(values: readonly number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  if (sorted.length === 0) return Number.NaN;
  const middle = Math.floor(sorted.length / 2);
  return sorted.length % 2 === 1
    ? (sorted[middle] as number)
    : ((sorted[middle - 1] as number) + (sorted[middle] as number)) / 2;
}

const rssMb = (slice: RoundResult) => slice.memory.rssBytes / 1e6;

export function summarize(results: readonly RoundResult[]): Summary {
  const { bare, guarded, naive } = medianRound(results);
  return {
    bareRps: Math.round(bare.rps),
    guardedRps: Math.round(guarded.rps),
    naiveRps: Math.round(naive.rps),
    ratio: round(guarded.rps / bare.rps, 3),
    // The guard's own added latency: measured with one connection, where no queueing hides it. Under
    // saturation, p99 mostly measures the queue that any lower throughput builds (reported separately).
    p99AddedMs: round(
      medianAdded(results, 'guarded', (slice) => slice.light.p99Ms),
      3,
    ),
    cpuRatio: round(median(cpuRatios(results, 'guarded', 'processUs')), 3),
    cpuRatioMainThread: round(median(cpuRatios(results, 'guarded', 'mainThreadUs')), 3),
    rssAddedMb: round(medianAdded(results, 'guarded', rssMb), 1),
    p50AddedMs1000: round(
      medianAdded(results, 'guarded', (slice) => slice.open.p50Ms),
      3,
    ),
    p99AddedMs1000: round(
      medianAdded(results, 'guarded', (slice) => slice.open.p99Ms),
      3,
    ),
    vcpuPer1000Rps: round(
      medianOf(results, 'guarded', (slice) => vcpuPer1000Rps(slice.openCpu)),
      3,
    ),
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

const verdict = (ok: boolean) => (ok ? 'met' : '**NOT met**');

/** Each figure issue 18 asks for, its target and goal, and whether this run met them. */
function targetsTable(summary: Summary): string[] {
  const row = (figure: string, value: string, target: string, goal: string) =>
    `| ${figure} | ${value} | ${target} | ${goal} |`;
  const atMost = (value: number, bound: number, unit: string) => `≤ ${bound} ${unit}: ${verdict(value <= bound)}`;
  const atLeast = (value: number, bound: number) => `≥ ${bound.toFixed(2)}: ${verdict(value >= bound)}`;
  const sidecar = PUBLISHED_ANCHORS[0];
  return [
    '| Figure (JSON key) | this run | target | goal |',
    '| --- | ---: | --- | --- |',
    row(
      'throughput, guarded ÷ bare, saturated, median round (`ratio`)',
      `**${summary.ratio.toFixed(3)}**`,
      atLeast(summary.ratio, TARGET_RATIO),
      atLeast(summary.ratio, GOAL_RATIO),
    ),
    row(
      'server CPU per request, bare ÷ (bare + added): whole process, all threads, saturated (`cpuRatio`)',
      `**${summary.cpuRatio.toFixed(3)}**`,
      atLeast(summary.cpuRatio, TARGET_CPU_RATIO),
      atLeast(summary.cpuRatio, GOAL_CPU_RATIO),
    ),
    row(
      "the same, **main thread only** (event-loop utilization: the loop's busy wall time, so no libuv pool or GC threads, but time descheduled by the OS counts) (`cpuRatioMainThread`)",
      summary.cpuRatioMainThread.toFixed(3),
      'for reference',
      '—',
    ),
    row(
      'RSS added to the server process at the end of the saturated window, MB = 10⁶ bytes (`rssAddedMb`)',
      `**${signed(summary.rssAddedMb, 1)}**`,
      atMost(summary.rssAddedMb, TARGET_RSS_ADDED_MB, 'MB'),
      '—',
    ),
    row(
      `p99 added per hop, open loop at ${rps(OPEN_RATE)} rps (\`p99AddedMs1000\`)`,
      `**${signed(summary.p99AddedMs1000, 3)} ms**`,
      atMost(summary.p99AddedMs1000, TARGET_P99_ADDED_MS_1000, 'ms'),
      atMost(summary.p99AddedMs1000, GOAL_P99_ADDED_MS_1000, 'ms'),
    ),
    row(
      `p50 added per hop, open loop at ${rps(OPEN_RATE)} rps (\`p50AddedMs1000\`)`,
      `${signed(summary.p50AddedMs1000, 3)} ms`,
      'for reference',
      '—',
    ),
    row(
      'p99 added at light load, one connection (`p99AddedMs`)',
      `${signed(summary.p99AddedMs, 3)} ms`,
      atMost(summary.p99AddedMs, TARGET_P99_ADDED_MS, 'ms'),
      '—',
    ),
    row(
      `guarded server process, vCPU per ${rps(OPEN_RATE)} rps (\`vcpuPer1000Rps\`)`,
      summary.vcpuPer1000Rps.toFixed(3),
      sidecar === undefined ? '—' : `for reference (Istio sidecar: ${sidecar.vcpuPer1000Rps.toFixed(2)})`,
      '—',
    ),
  ];
}

/** Server CPU per request over the saturated windows, per round: what the guard costs the server itself. */
function serverCpuLines(results: readonly RoundResult[]): string[] {
  const ratios = (variant: Variant, thread: 'processUs' | 'mainThreadUs') =>
    cpuRatios(results, variant, thread)
      .map((value) => value.toFixed(3))
      .join(', ');
  const added = (variant: Variant) =>
    perRound(results, variant, (slice, bare) => slice.serverCpu.processUs - bare.serverCpu.processUs);
  const bareUs = medianOf(results, 'bare', (slice) => slice.serverCpu.processUs);
  return [
    `- bare used ${bareUs.toFixed(1)} µs of process CPU per request (median of rounds); the guard added ${list(added('guarded'), 1)} µs per round (median **${signed(median(added('guarded')), 1)} µs**), without an audit subscriber ${list(added('guarded-no-sink'), 1)} µs (median ${signed(median(added('guarded-no-sink')), 1)} µs)`,
    `- bare ÷ (bare + added) per round, whole process: ${ratios('guarded', 'processUs')} — the headline \`cpuRatio\` is their median; it is the capacity ratio a deployment bound by the server's CPU would see`,
    `- the same from the main thread alone (event-loop utilization: the wall time the loop was busy, which does not see work on the libuv pool, worker threads or V8's GC threads, but does count time the OS gave the core to another process — so on this shared machine it can exceed the process's CPU): ${ratios('guarded', 'mainThreadUs')} (median ${median(cpuRatios(results, 'guarded', 'mainThreadUs')).toFixed(3)}, \`cpuRatioMainThread\`)`,
    `- without an audit subscriber, whole process: ${ratios('guarded-no-sink', 'processUs')} (median ${median(cpuRatios(results, 'guarded-no-sink', 'processUs')).toFixed(3)})`,
  ];
}

function memoryTable(results: readonly RoundResult[]): string[] {
  const field = (key: keyof ServerMemory) => (slice: RoundResult) => slice.memory[key];
  const cell = (variant: Variant, key: keyof ServerMemory) => mb(medianOf(results, variant, field(key)));
  const added = (variant: Variant, key: keyof ServerMemory) =>
    variant === 'bare' ? '—' : signed(medianAdded(results, variant, field(key)) / 1e6, 1);
  return [
    '| Variant | RSS | added | peak RSS (maxRSS) | heap used | added | external | added | of which arrayBuffers | added |',
    '| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |',
    ...VARIANTS.map(
      (variant) =>
        `| ${variant} | ${cell(variant, 'rssBytes')} | ${variant === 'guarded' ? `**${added(variant, 'rssBytes')}**` : added(variant, 'rssBytes')} | ${cell(variant, 'maxRssBytes')} | ${cell(variant, 'heapUsedBytes')} | ${added(variant, 'heapUsedBytes')} | ${cell(variant, 'externalBytes')} | ${added(variant, 'externalBytes')} | ${cell(variant, 'arrayBuffersBytes')} | ${added(variant, 'arrayBuffersBytes')} |`,
    ),
  ];
}

function openLoopTable(results: readonly RoundResult[]): string[] {
  const pick = (field: 'p50Ms' | 'p99Ms') => (slice: RoundResult) => slice.open[field];
  return [
    `| Variant | answered rps | p50 ms | p99 ms | p50 added | p99 added | server CPU µs/request | CPU s per wall s | vCPU per ${rps(OPEN_RATE)} rps | added |`,
    '| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |',
    ...VARIANTS.map((variant) => {
      const bare = variant === 'bare';
      const addedP99 = bare ? '—' : signed(medianAdded(results, variant, pick('p99Ms')), 3);
      return `| ${variant} | ${rps(medianOf(results, variant, (slice) => slice.openCpu.rps))} | ${ms(medianOf(results, variant, pick('p50Ms')))} | ${ms(medianOf(results, variant, pick('p99Ms')))} | ${bare ? '—' : signed(medianAdded(results, variant, pick('p50Ms')), 3)} | ${variant === 'guarded' ? `**${addedP99}**` : addedP99} | ${medianOf(results, variant, (slice) => slice.openCpu.processUs).toFixed(1)} | ${medianOf(results, variant, (slice) => slice.openCpu.cpuPerSecond).toFixed(3)} | ${medianOf(results, variant, (slice) => vcpuPer1000Rps(slice.openCpu)).toFixed(3)} | ${
        bare
          ? '—'
          : signed(
              medianAdded(results, variant, (slice) => vcpuPer1000Rps(slice.openCpu)),
              3,
            )
      } |`;
    }),
  ];
}

/** Our variants beside the meshes' published per-proxy figures, on the axes the meshes publish. */
function meshAxesTable(results: readonly RoundResult[]): string[] {
  const ours = VARIANTS.map((variant) => {
    const vcpu = medianOf(results, variant, (slice) => vcpuPer1000Rps(slice.openCpu)).toFixed(3);
    const rss = mb(medianOf(results, variant, (slice) => slice.memory.rssBytes));
    if (variant === 'bare')
      return `| bare Fastify, whole server process (this run; the baseline) | ${vcpu} | ${rss} MB RSS | — |`;
    const addedVcpu = signed(
      medianAdded(results, variant, (slice) => vcpuPer1000Rps(slice.openCpu)),
      3,
    );
    const addedRss = signed(medianAdded(results, variant, rssMb), 1);
    const p50 = signed(
      medianAdded(results, variant, (slice) => slice.open.p50Ms),
      3,
    );
    const p99 = signed(
      medianAdded(results, variant, (slice) => slice.open.p99Ms),
      3,
    );
    return `| ${variant}, whole server process (this run) | ${vcpu} (**${addedVcpu}** vs bare) | ${rss} MB RSS (**${addedRss} MB** vs bare) | one hop: ${p50} ms p50, **${p99} ms p99** at ${rps(OPEN_RATE)} rps |`;
  });
  return [
    `| Proxy or variant | vCPU per ${rps(OPEN_RATE)} rps | memory | latency added |`,
    '| --- | ---: | ---: | --- |',
    ...anchorRows(),
    ...ours,
  ];
}

export function renderMarkdown(
  settings: BenchSettings,
  results: readonly RoundResult[],
  served: readonly AuditCount[],
  cold: ColdPathReport,
  admit: AdmitCostReport,
  cacheBytes: CacheBytesReport,
  audit: AuditCostReport,
  loadBefore: readonly number[],
  elapsedSeconds: number,
): string {
  const figures = medianRound(results);
  const summary = summarize(results);
  const bareRps = figures.bare.rps;
  const lag = (field: 'sendLagP50Ms' | 'sendLagP99Ms') => median(results.map((slice) => slice.open[field]));
  const lines = [
    '# Benchmarks',
    '',
    'Written by `npm run bench:guard` (bench/guard.ts); re-run it to refresh this page. Knobs: `BENCH_ROUNDS` (default 7), `BENCH_SECONDS` (saturated window per slice, default 4),',
    `\`BENCH_OPEN_SECONDS\` (the ${rps(OPEN_RATE)}-rps open-loop window, default 2), \`BENCH_LIGHT_SECONDS\` (one-connection window, default 1), \`BENCH_CONNECTIONS\` (default 16),`,
    '`BENCH_WARMUP_SECONDS` (first slice of each server, default 5); `BENCH_VARIANTS=guarded` runs a subset for profiling and writes nothing.',
    '',
    ...machine(loadBefore),
    `- This run: every server in a process of its own, all up for the whole run; ${settings.rounds} round(s) in which each variant takes a slice in turn (${VARIANTS.join(', ')}; the order rotates every round, so that all variants meet the machine's slow and fast periods alike). A slice: a fresh load-generator process, ${settings.connections} keep-alive mTLS connections, pipelining 1, warm-up ≥ ${settings.sliceWarmupSeconds} s (${settings.warmupSeconds} s for a server's first slice) and one full rotation of that round's fresh tokens, ${settings.measureSeconds} s saturated; then a second fresh generator (bench/lib/mesh-load.ts, the mesh bench's) with the same client certificate and tokens: ${settings.lightSeconds} s on one connection, then an open loop at ${rps(OPEN_RATE)} rps on ${settings.connections} connections (${settings.openWarmupSeconds} s unrecorded, ${settings.openSeconds} s measured); total ${Math.round(elapsedSeconds)} s.`,
    "- The servers run the TypeScript sources (Node strips the types as it loads each file), so their RSS includes what type stripping keeps of the code they loaded — more for the guarded server, which loads more code. Server CPU and memory are the server process's own samples (`process.cpuUsage()`, `eventLoopUtilization()`, `process.memoryUsage()`, `resourceUsage().maxRSS`) at the edges of each measured window.",
    '',
    '## Targets (issue 18)',
    '',
    `Each figure is the median over ${settings.rounds} round(s) of that round's guarded slice against that round's bare slice (the throughput ratio: the median round's).`,
    '',
    ...targetsTable(summary),
    '',
    '## Guard in steady state',
    '',
    `\`GET /orders/:id\` on Fastify over HTTPS with a required client certificate (TLS 1.3), driven by a separate load-generator process (undici) presenting the gateway's SVID, cycling through ${settings.tokens.toLocaleString('en-US')} distinct valid Txn-Tokens. The table shows round ${figures.bare.round}, the median round of ${settings.rounds} by guarded ÷ bare (below); every response was 200.`,
    '',
    '| Variant | rps | p50 ms | p99 ms | ratio vs bare | server CPU µs/request | main thread µs/request |',
    '| --- | ---: | ---: | ---: | ---: | ---: | ---: |',
    ...VARIANTS.map((variant) => {
      const figure = figures[variant];
      return `| ${describeVariant(variant)} | ${rps(figure.rps)} | ${ms(figure.p50Ms)} | ${ms(figure.p99Ms)} | ${(figure.rps / bareRps).toFixed(3)} | ${figure.cpuUs.toFixed(1)} | ${figure.mainThreadUs.toFixed(1)} |`;
    }),
    '',
    `- guarded / bare = **${summary.ratio.toFixed(3)}** (target ≥ ${TARGET_RATIO.toFixed(2)}: ${verdict(summary.ratio >= TARGET_RATIO)}; goal ${GOAL_RATIO.toFixed(2)}: ${verdict(summary.ratio >= GOAL_RATIO)})`,
    `- per round, guarded ÷ that round's bare: ${pairedRatios(results)
      .map(({ round: n, ratio }) => `${ratio.toFixed(3)} (round ${n})`)
      .join(', ')}; the headline is the median`,
    `- under saturation p99 rises by ${(figures.guarded.p99Ms - figures.bare.p99Ms).toFixed(3)} ms with the guard: the queue that the lower throughput builds (the guard's own latency is in the open-loop and light-load tables below)`,
    `- guarded / naive = ${(summary.guardedRps / summary.naiveRps).toFixed(2)}× — what the token and decision caches buy`,
    `- guarded without an audit subscriber / bare = ${(figures['guarded-no-sink'].rps / bareRps).toFixed(3)} — enforcement alone; the difference to the audited row is the cost of writing every decision to the JSON-lines file`,
    '',
    'The load is closed-loop (each connection sends its next request when the previous answer arrives), so the',
    'servers run saturated and latency includes queueing.',
    '',
    '### Server CPU per request, saturated',
    '',
    `Over each saturated window: the server process's CPU (\`process.cpuUsage()\`, all threads) and its main thread's busy time, ÷ the requests it answered. Per round, bare ÷ (bare + added) = bare ÷ guarded; target ≥ ${TARGET_CPU_RATIO.toFixed(2)}: ${verdict(summary.cpuRatio >= TARGET_CPU_RATIO)}, goal ${GOAL_CPU_RATIO.toFixed(2)}: ${verdict(summary.cpuRatio >= GOAL_CPU_RATIO)}.`,
    '',
    ...serverCpuLines(results),
    '',
    '### Memory at the end of the saturated window, MB (10⁶ bytes)',
    '',
    `\`process.memoryUsage()\` of each server process as its saturated window closes, median over rounds; "added" is the median over rounds of that round's variant − that round's bare. Peak RSS is \`resourceUsage().maxRSS\`, the largest so far. Target for the guard's added RSS ≤ ${TARGET_RSS_ADDED_MB} MB: ${verdict(summary.rssAddedMb <= TARGET_RSS_ADDED_MB)}.`,
    '',
    ...memoryTable(results),
    '',
    `- guarded − bare RSS per round: ${list(
      perRound(results, 'guarded', (slice, bare) => rssMb(slice) - rssMb(bare)),
      1,
    )} MB`,
    `- per cached token, in process (${rps(cacheBytes.tokens)} fresh tokens of ${cacheBytes.tokenLength} characters, heap after a full collection): **${rps(cacheBytes.measuredBytes)} bytes** held by all caches together (the verified token, its remembered answer, the policy engine's decision); the caches charge ${rps(cacheBytes.chargedTokenBytes)} + ${rps(cacheBytes.chargedDecisionBytes)} = ${rps(cacheBytes.chargedTokenBytes + cacheBytes.chargedDecisionBytes)} bytes against their budgets (\`cache.tokenBytes\`, default 8 MiB; \`cache.decisionBytes\`, 4 MiB). The bench sends 1,000 new tokens every round, so the token cache fills to its budget over the first rounds`,
    '',
    `### Open loop at ${rps(OPEN_RATE)} rps`,
    '',
    `Requests sent on a fixed schedule by a pacer thread, whatever the answers do, on ${settings.connections} connections, each timed from its scheduled send time (no coordinated omission); same certificate and token rotation as the saturated phase. Median over rounds; "added" = median over rounds of that round's variant − that round's bare. Server CPU over the window: CPU seconds per wall second, and that scaled to ${rps(OPEN_RATE)} rps (vCPU per ${rps(OPEN_RATE)} rps). The generator itself sent with a lag of p50 ${ms(lag('sendLagP50Ms'))} ms / p99 ${ms(lag('sendLagP99Ms'))} ms behind schedule, included in every row alike. Target for the guard's p99 added per hop ≤ ${TARGET_P99_ADDED_MS_1000} ms: ${verdict(summary.p99AddedMs1000 <= TARGET_P99_ADDED_MS_1000)}; goal ${GOAL_P99_ADDED_MS_1000} ms: ${verdict(summary.p99AddedMs1000 <= GOAL_P99_ADDED_MS_1000)}.`,
    '',
    ...openLoopTable(results),
    '',
    `- guarded − bare per round: p99 ${list(
      perRound(results, 'guarded', (slice, bare) => slice.open.p99Ms - bare.open.p99Ms),
      3,
    )} ms; p50 ${list(
      perRound(results, 'guarded', (slice, bare) => slice.open.p50Ms - bare.open.p50Ms),
      3,
    )} ms`,
    '',
    "### On the meshes' axes",
    '',
    `${ANCHORS_SOURCE}. Ours are from this run on this machine, with a tiny JSON answer; the guard is embedded, so what compares with a proxy's own figures is what it adds to the service's process (bold). Read them as orders of magnitude, not a ranking.`,
    '',
    ...meshAxesTable(results),
    '',
    '### Latency at light load',
    '',
    `One connection, one request at a time (${settings.lightSeconds} s, same servers, tokens already seen): no queueing, so the difference is the guard's own latency. Median over rounds; "added" is the median over rounds of that round's variant − that round's bare.`,
    '',
    '| Variant | rps | p50 ms | p99 ms | p99 added vs bare, ms |',
    '| --- | ---: | ---: | ---: | ---: |',
    ...VARIANTS.map(
      (variant) =>
        `| ${variant} | ${rps(medianOf(results, variant, (slice) => slice.light.rps))} | ${ms(medianOf(results, variant, (slice) => slice.light.p50Ms))} | ${ms(medianOf(results, variant, (slice) => slice.light.p99Ms))} | ${
          variant === 'bare'
            ? '—'
            : signed(
                medianAdded(results, variant, (slice) => slice.light.p99Ms),
                3,
              )
        } |`,
    ),
    '',
    `- guarded − bare p99 per round: ${list(
      perRound(results, 'guarded', (slice, bare) => slice.light.p99Ms - bare.light.p99Ms),
      3,
    )} ms; median **${signed(summary.p99AddedMs, 3)} ms** (target ≤ ${TARGET_P99_ADDED_MS} ms: ${verdict(summary.p99AddedMs <= TARGET_P99_ADDED_MS)})`,
    '',
    '### Guard cost per request, in process',
    '',
    `\`guard.pipeline.admit\` in steady state (cached connection identity, token and decision), ${admit.ops.toLocaleString('en-US')} calls, no network — less exposed to a noisy machine than the HTTP numbers:`,
    '',
    `- with the audit file sink subscribed: **${admit.auditedUs.toFixed(1)} µs** per request (recording the decision into the audit ring; the lines are written after the loop); with no audit subscriber: ${admit.unauditedUs.toFixed(1)} µs`,
    `- the audit alone (bench/lib/audit-cost.ts, 1,000 transactions in rotation): recording a decision costs the request thread **${audit.recordInlineUs.toFixed(2)} µs** (${audit.recordThreadUs.toFixed(2)} µs when the writer runs on a worker thread: the threads pass the ring's cache lines back and forth); the writer then spends ${audit.writeUs.toFixed(2)} µs per event encoding and writing its line — on the request thread's spare turns by default (\`audit.writer: 'inline'\`), on its own thread with \`'thread'\``,
    `- bare Fastify answered one request every ${(1e6 / bareRps).toFixed(0)} µs; adding admit alone to that predicts a ratio of about ${(1e6 / bareRps / (1e6 / bareRps + admit.auditedUs)).toFixed(2)} — an upper bound: inside a busy server the same code runs slower (colder CPU caches), and the Fastify adapter adds its hooks and async context.`,
    '',
    '### Every round',
    '',
    `| Round | Variant | rps | server CPU µs/request | p50 ms | p99 ms | max ms | warm-up s | requests | RSS MB | ${rps(OPEN_RATE)} rps p50 ms | p99 ms | vCPU per ${rps(OPEN_RATE)} rps | light p50 ms | light p99 ms |`,
    '| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |',
    ...results.map(
      ({ round: n, variant, report, serverCpu, memory, open, openCpu, light }) =>
        `| ${n} | ${variant} | ${rps(report.rps)} | ${serverCpu.processUs.toFixed(1)} | ${ms(report.p50Ms)} | ${ms(report.p99Ms)} | ${ms(report.maxMs)} | ${report.warmupSeconds.toFixed(1)} | ${report.requests.toLocaleString('en-US')} | ${mb(memory.rssBytes)} | ${ms(open.p50Ms)} | ${ms(open.p99Ms)} | ${vcpuPer1000Rps(openCpu).toFixed(3)} | ${ms(light.p50Ms)} | ${ms(light.p99Ms)} |`,
    ),
    '',
    ...served.map(
      ({ variant, requests, answersCounted, auditLines }) =>
        `- ${variant}: answered ${requests.toLocaleString('en-US')} requests over the run (warm-ups, saturated, light load and the ${rps(OPEN_RATE)}-rps open loop; the load generators counted ${answersCounted.toLocaleString('en-US')} answers${answersCounted === requests ? '' : ' — **a different count**'}) and wrote ${auditLines.toLocaleString('en-US')} decision events to its audit file${auditLines === requests ? ' — one per request' : ' — **not one per request**'}.`,
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
    '- **guarded-no-sink**: the same with no audit subscriber: what enforcement costs without the audit I/O.',
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
    case 'guarded-other-writer':
      return 'guarded, the other audit writer';
  }
}
