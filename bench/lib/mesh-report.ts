/**
 * What bench/mesh.ts reports: per-round results folded into medians (every "added" figure is paired —
 * that round's target minus that round's bare upstream — before the median is taken), rendered as the
 * Markdown section of docs/benchmarks.md, and the one-line JSON summary that ends stdout.
 */
import os from 'node:os';
import { ANCHORS_SOURCE, anchorRows } from './mesh-anchors.ts';
import type { PhaseReport } from './mesh-protocol.ts';

export const HOPS = ['bare', 'guard', 'sidecar', 'nginx'] as const;
export type Hop = (typeof HOPS)[number];
export const TARGETS = [...HOPS, 'authz', 'authz-grpc'] as const;
export type Target = (typeof TARGETS)[number];
export const PHASES = ['saturated', 'rps200', 'rps1000'] as const;
export type PhaseName = (typeof PHASES)[number];
export const LIGHT_RATES = { rps200: 200, rps1000: 1_000 } as const;

export const TARGET_LABELS: Readonly<Record<Target, string>> = {
  bare: '(a) bare upstream, plain HTTP',
  guard: '(b) embedded guard (node:http + lockstepHttp)',
  sidecar: '(c) Lockstep sidecar → upstream',
  nginx: '(d) nginx mTLS proxy → upstream (no authz)',
  authz: '(e) decision service, Envoy ext_authz HTTP',
  'authz-grpc': '(e) decision service, Envoy ext_authz gRPC',
};

/** What the servers of one target spent over one measured window, read from /proc. */
export interface WindowCost {
  /** Answers inside the window (the generator's count between its two marks). */
  readonly requests: number;
  readonly seconds: number;
  /** CPU per request of every server-side process of the target (upstream + proxy). */
  readonly serverUs: number;
  /** CPU per request of the hop's own process(es) (sidecar, nginx, decision service); null when embedded or bare. */
  readonly hopUs: number | null;
  /** CPU per request of the bench process: the control plane, whose collector ingests the audited decisions. */
  readonly controlPlaneUs: number;
  /** VmRSS at the window's end: all server-side processes, and the hop's own. */
  readonly serverRssBytes: number;
  readonly hopRssBytes: number | null;
}

export interface Memory {
  readonly serverRssBytes: number;
  readonly hopRssBytes: number | null;
}

export interface SliceResult {
  readonly round: number;
  readonly target: Target;
  readonly phases: Readonly<Record<PhaseName, PhaseReport>>;
  readonly cost: Readonly<Record<PhaseName, WindowCost>>;
}

export interface MeshSettings {
  readonly rounds: number;
  readonly connections: number;
  readonly measureSeconds: number;
  readonly firstWarmupSeconds: number;
  readonly warmupSeconds: number;
  readonly tokens: number;
  readonly quick: boolean;
  /** BENCH_MESH_TARGETS: a subset to run (profiling), or null for all. */
  readonly only: readonly Target[] | null;
}

export interface RunInfo {
  readonly settings: MeshSettings;
  readonly targets: readonly Target[];
  /** Why nginx did not run, or null. */
  readonly nginxSkipped: string | null;
  /** Memory of each target once started (joined, policy applied), before any request. */
  readonly idle: Readonly<Partial<Record<Target, Memory>>>;
  readonly nginxVersion: string | null;
  readonly loadBefore: readonly number[];
  readonly loadAfter: readonly number[];
  readonly seconds: number;
}

export function median(values: readonly number[]): number {
  const finite = values.filter((value) => Number.isFinite(value)).sort((a, b) => a - b);
  if (finite.length === 0) return Number.NaN;
  const middle = Math.floor(finite.length / 2);
  return finite.length % 2 === 1
    ? (finite[middle] as number)
    : ((finite[middle - 1] as number) + (finite[middle] as number)) / 2;
}

function slicesOf(results: readonly SliceResult[], target: Target): SliceResult[] {
  return results.filter((result) => result.target === target);
}

/** Median over rounds of `pick(slice)`. */
function medianOf(results: readonly SliceResult[], target: Target, pick: (slice: SliceResult) => number): number {
  return median(slicesOf(results, target).map(pick));
}

/** Per round: pick(target's slice) − pick(bare's slice of the same round). */
function pairedAdded(results: readonly SliceResult[], target: Target, pick: (slice: SliceResult) => number): number[] {
  const added: number[] = [];
  for (const slice of slicesOf(results, target)) {
    const bare = results.find((candidate) => candidate.target === 'bare' && candidate.round === slice.round);
    if (bare) added.push(pick(slice) - pick(bare));
  }
  return added;
}

const medianAdded = (results: readonly SliceResult[], target: Target, pick: (slice: SliceResult) => number) =>
  median(pairedAdded(results, target, pick));

const ms = (value: number) => (Number.isFinite(value) ? value.toFixed(3) : '—');
const signedMs = (value: number) => (Number.isFinite(value) ? `${value >= 0 ? '+' : ''}${value.toFixed(3)}` : '—');
const us = (value: number) => (Number.isFinite(value) ? value.toFixed(1) : '—');
const signedUs = (value: number) => (Number.isFinite(value) ? `${value >= 0 ? '+' : ''}${value.toFixed(1)}` : '—');
const count = (value: number) => (Number.isFinite(value) ? Math.round(value).toLocaleString('en-US') : '—');
const vcpu = (value: number) => (Number.isFinite(value) ? value.toFixed(3) : '—');
const mb = (bytes: number) => (Number.isFinite(bytes) ? (bytes / 1e6).toFixed(0) : '—');

/**
 * The hop's own memory from a window's end (or idle): its process(es), or — embedded — what the guard
 * adds to the service's process (guard process − bare upstream process, the same round).
 */
function hopMemory(target: Target, own: Memory | undefined, bare: Memory | undefined): number {
  if (own === undefined) return Number.NaN;
  if (target === 'bare') return own.serverRssBytes;
  if (target === 'guard') return bare === undefined ? Number.NaN : own.serverRssBytes - bare.serverRssBytes;
  return own.hopRssBytes ?? Number.NaN;
}

function windowMemory(results: readonly SliceResult[], target: Target, round: number, phase: PhaseName): number {
  const own = results.find((slice) => slice.target === target && slice.round === round)?.cost[phase];
  const bare = results.find((slice) => slice.target === 'bare' && slice.round === round)?.cost[phase];
  return hopMemory(target, own, bare);
}

/** The hop's own memory at 1,000 rps in round 1: before that process was ever saturated. */
const lightMemory = (results: readonly SliceResult[], target: Target) => windowMemory(results, target, 1, 'rps1000');

/** The hop's own memory after saturation: the largest over rounds. */
function saturatedMemory(results: readonly SliceResult[], target: Target): number {
  const rounds = [...new Set(results.map((slice) => slice.round))];
  return Math.max(...rounds.map((round) => windowMemory(results, target, round, 'saturated')).filter(Number.isFinite));
}

/** The hop's own CPU at 1,000 rps, in vCPU: its process(es), or — embedded — what it adds to the service's process. */
function hopVcpu(results: readonly SliceResult[], target: Target): number {
  const perRequestUs =
    target === 'guard'
      ? medianAdded(results, target, (slice) => slice.cost.rps1000.serverUs)
      : medianOf(results, target, (slice) => slice.cost.rps1000.hopUs ?? Number.NaN);
  return (perRequestUs * 1000) / 1e6;
}

export interface MeshSummary {
  readonly bareRps: number;
  readonly guardRps: number;
  readonly sidecarRps: number;
  readonly nginxRps: number | null;
  readonly guardP99AddedMs: number;
  readonly sidecarP50AddedMs: number;
  readonly sidecarP99AddedMs: number;
  readonly nginxP99AddedMs: number | null;
  readonly sidecarVcpuPer1kRps: number;
  readonly sidecarRssMb: number;
  readonly nginxVcpuPer1kRps: number | null;
  readonly guardAddedVcpuPer1kRps: number;
  readonly authzDecisionsPerSecond: number;
  readonly authzP99Ms: number;
  readonly authzGrpcDecisionsPerSecond: number | null;
  readonly authzGrpcP99Ms: number | null;
}

const round3 = (value: number) => Number(value.toFixed(3));

export function summarize(results: readonly SliceResult[], targets: readonly Target[]): MeshSummary {
  const rps = (target: Target) => Math.round(medianOf(results, target, (slice) => slice.phases.saturated.rps));
  const p99Added = (target: Target) => round3(medianAdded(results, target, (slice) => slice.phases.rps1000.p99Ms));
  const nginx = targets.includes('nginx');
  const grpc = targets.includes('authz-grpc');
  return {
    bareRps: rps('bare'),
    guardRps: rps('guard'),
    sidecarRps: rps('sidecar'),
    nginxRps: nginx ? rps('nginx') : null,
    guardP99AddedMs: p99Added('guard'),
    sidecarP50AddedMs: round3(medianAdded(results, 'sidecar', (slice) => slice.phases.rps1000.p50Ms)),
    sidecarP99AddedMs: p99Added('sidecar'),
    nginxP99AddedMs: nginx ? p99Added('nginx') : null,
    sidecarVcpuPer1kRps: round3(hopVcpu(results, 'sidecar')),
    sidecarRssMb: Math.round(lightMemory(results, 'sidecar') / 1e6),
    nginxVcpuPer1kRps: nginx ? round3(hopVcpu(results, 'nginx')) : null,
    guardAddedVcpuPer1kRps: round3(hopVcpu(results, 'guard')),
    authzDecisionsPerSecond: rps('authz'),
    authzP99Ms: round3(medianOf(results, 'authz', (slice) => slice.phases.saturated.p99Ms)),
    authzGrpcDecisionsPerSecond: grpc ? rps('authz-grpc') : null,
    authzGrpcP99Ms: grpc ? round3(medianOf(results, 'authz-grpc', (slice) => slice.phases.saturated.p99Ms)) : null,
  };
}

function latencyTable(results: readonly SliceResult[], hops: readonly Hop[]): string[] {
  const rows = hops.map((target) => {
    const cells: string[] = [TARGET_LABELS[target]];
    for (const phase of ['rps200', 'rps1000'] as const) {
      cells.push(ms(medianOf(results, target, (slice) => slice.phases[phase].p50Ms)));
      cells.push(ms(medianOf(results, target, (slice) => slice.phases[phase].p99Ms)));
      if (target === 'bare') cells.push('—', '—');
      else {
        cells.push(`**${signedMs(medianAdded(results, target, (slice) => slice.phases[phase].p50Ms))}**`);
        cells.push(`**${signedMs(medianAdded(results, target, (slice) => slice.phases[phase].p99Ms))}**`);
      }
    }
    return `| ${cells.join(' | ')} |`;
  });
  return [
    '| Configuration | 200 rps p50 | p99 | added p50 | added p99 | 1,000 rps p50 | p99 | added p50 | added p99 |',
    '| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |',
    ...rows,
  ];
}

function costTable(results: readonly SliceResult[], hops: readonly Hop[], connections: number): string[] {
  const rows = hops.map((target) => {
    const bare = target === 'bare';
    return `| ${[
      TARGET_LABELS[target],
      count(medianOf(results, target, (slice) => slice.phases.saturated.rps)),
      bare ? '1.000' : median(pairedRatio(results, target)).toFixed(3),
      ms(medianOf(results, target, (slice) => slice.phases.saturated.p99Ms)),
      us(medianOf(results, target, (slice) => slice.cost.rps1000.serverUs)),
      bare ? '—' : signedUs(medianAdded(results, target, (slice) => slice.cost.rps1000.serverUs)),
      us(medianOf(results, target, (slice) => slice.cost.saturated.serverUs)),
      bare ? '—' : signedUs(medianAdded(results, target, (slice) => slice.cost.saturated.serverUs)),
      bare ? '—' : `${vcpu(hopVcpu(results, target))}${target === 'guard' ? ' (added)' : ''}`,
      us(medianOf(results, target, (slice) => slice.cost.rps1000.controlPlaneUs)),
    ].join(' | ')} |`;
  });
  return [
    `| Configuration | saturated rps (${connections} conns) | ÷ bare | p99 saturated, ms | server CPU µs/req at 1,000 rps | added vs bare | server CPU µs/req saturated | added vs bare | hop vCPU per 1,000 rps | control plane µs/req at 1,000 rps |`,
    '| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |',
    ...rows,
  ];
}

function memoryTable(results: readonly SliceResult[], targets: readonly Target[], idle: RunInfo['idle']): string[] {
  // The gRPC endpoint is the same process as the HTTP one.
  const rows = targets
    .filter((target) => target !== 'authz-grpc')
    .map((target) => {
      const what =
        target === 'bare'
          ? 'the upstream process'
          : target === 'guard'
            ? 'guard process − upstream process'
            : target === 'nginx'
              ? 'master + worker'
              : 'its own process';
      return `| ${TARGET_LABELS[target]} | ${what} | ${mb(hopMemory(target, idle[target], idle.bare))} | ${mb(lightMemory(results, target))} | ${mb(saturatedMemory(results, target))} |`;
    });
  return [
    '| Configuration | counted | idle (joined, policy applied) | at 1,000 rps, round 1 (never saturated yet) | after saturation (largest) |',
    '| --- | --- | ---: | ---: | ---: |',
    ...rows,
  ];
}

function pairedRatio(results: readonly SliceResult[], target: Target): number[] {
  const ratios: number[] = [];
  for (const slice of slicesOf(results, target)) {
    const bare = results.find((candidate) => candidate.target === 'bare' && candidate.round === slice.round);
    if (bare) ratios.push(slice.phases.saturated.rps / bare.phases.saturated.rps);
  }
  return ratios;
}

function authzTable(results: readonly SliceResult[], targets: readonly Target[], connections: number): string[] {
  const endpoints: { target: 'authz' | 'authz-grpc'; label: string }[] = [
    { target: 'authz', label: 'HTTP `/envoy/ext_authz/<path>` + XFCC' },
    { target: 'authz-grpc', label: 'gRPC `envoy.service.auth.v3.Authorization/Check`' },
  ];
  const rows = endpoints
    .filter(({ target }) => targets.includes(target))
    .map(({ target, label }) => {
      const pick = (phase: PhaseName, field: 'p50Ms' | 'p99Ms') =>
        ms(medianOf(results, target, (slice) => slice.phases[phase][field]));
      return `| ${[
        label,
        count(medianOf(results, target, (slice) => slice.phases.saturated.rps)),
        pick('saturated', 'p50Ms'),
        pick('saturated', 'p99Ms'),
        `${pick('rps200', 'p50Ms')} / ${pick('rps200', 'p99Ms')}`,
        `${pick('rps1000', 'p50Ms')} / ${pick('rps1000', 'p99Ms')}`,
        us(medianOf(results, target, (slice) => slice.cost.rps1000.serverUs)),
        us(medianOf(results, target, (slice) => slice.cost.saturated.serverUs)),
        vcpu(hopVcpu(results, target)),
      ].join(' | ')} |`;
    });
  return [
    `| Endpoint | decisions/s (${connections} conns, saturated) | p50 ms | p99 ms | 200/s p50 / p99 ms | 1,000/s p50 / p99 ms | CPU µs/decision at 1,000/s | saturated | vCPU per 1,000 decisions/s |`,
    '| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |',
    ...rows,
  ];
}

function istioTable(results: readonly SliceResult[], hops: readonly Hop[]): string[] {
  const ours = (target: Hop, label: string) => {
    const p99 = medianAdded(results, target, (slice) => slice.phases.rps1000.p99Ms);
    return `| ${label} | ${vcpu(hopVcpu(results, target))} | ${mb(lightMemory(results, target))} MB | one hop: ${signedMs(p99)} ms p99 at 1,000 rps |`;
  };
  return [
    '| Proxy | vCPU per 1,000 rps | memory | latency |',
    '| --- | ---: | ---: | --- |',
    ...anchorRows(),
    ours('sidecar', 'Lockstep sidecar (this run; mTLS + Txn-Token + Cedar + audit)'),
    ...(hops.includes('nginx') ? [ours('nginx', 'nginx mTLS proxy, 1 worker (this run; no authz)')] : []),
    ours('guard', 'Lockstep embedded guard (this run; added to the service process)'),
  ];
}

/** Per-round figures behind the headline, so that the spread is visible. */
function perRoundLines(results: readonly SliceResult[], hops: readonly Hop[]): string[] {
  const list = (values: readonly number[]) => values.map(signedMs).join(', ');
  return hops
    .filter((target) => target !== 'bare')
    .map(
      (target) =>
        `- ${target}: added p99 at 1,000 rps per round ${list(pairedAdded(results, target, (slice) => slice.phases.rps1000.p99Ms))} ms; ` +
        `added p50 ${list(pairedAdded(results, target, (slice) => slice.phases.rps1000.p50Ms))} ms`,
    );
}

export function renderMarkdown(results: readonly SliceResult[], info: RunInfo): string {
  const { settings } = info;
  const hops = HOPS.filter((hop) => info.targets.includes(hop));
  const cpu = os.cpus()[0]?.model ?? 'unknown CPU';
  const lag = (field: 'sendLagP50Ms' | 'sendLagP99Ms') =>
    median(results.flatMap((slice) => [slice.phases.rps200[field], slice.phases.rps1000[field]]));
  const load = (values: readonly number[]) => values.map((value) => value.toFixed(2)).join(' / ');
  return [
    '## Mesh mode (bench/mesh.ts)',
    '',
    `Written by \`npm run bench:mesh\` (bench/mesh.ts); re-run it to refresh this section. Knobs: \`--rounds N\` or \`BENCH_MESH_ROUNDS\` (default 3), \`BENCH_MESH_SECONDS\` (each measured window, default 3), \`BENCH_MESH_CONNECTIONS\` (default 16); \`--quick\` (or \`BENCH_MESH_QUICK=1\`) runs one short round for CI and writes nothing here, as does \`BENCH_MESH_TARGETS=bare,sidecar,…\` (a subset); \`BENCH_MESH_PROFILE=<dir>\` writes each server's CPU profile there (read it with \`node bench/cpuprofile-top.ts\`).`,
    '',
    `- ${new Date().toISOString()}; Node ${process.version} on ${os.type()} ${os.release()} (${os.arch()}); ${cpu}, ${os.availableParallelism()} cores, ${Math.round(os.totalmem() / 2 ** 30)} GiB RAM; ${info.nginxVersion ?? 'nginx absent'}`,
    `- **Machine caveat:** a small shared machine (2 cores, other work running: load average ${load(info.loadBefore)} before, ${load(info.loadAfter)} after). Servers, load generator and control plane share those 2 cores, so absolute figures are low and noisy; compare rows of the same run. Every target ran in each of ${settings.rounds} round(s), in an order that rotates each round and reverses every other round, each slice starting once the previous one's after-effects were over (servers and control plane below 5% of a core); each figure is the median over rounds, and each "added" figure the median of that round's target − that round's bare upstream. Total ${Math.round(info.seconds)} s.`,
    `- Everything real: a control plane with its monitor (assembleControlPlane); the guard, the sidecar and the decision service each joined as \`orders\` with a join token, got orders' signed policy slice on the stream (the example policies + one permit for the gateway's own work), verify ${settings.tokens.toLocaleString('en-US')} distinct Txn-Tokens per round exchanged at the control plane's Txn-Token Service (fresh each round), decide with Cedar and ship every decision to the monitor's collector (in the bench process, whose CPU is not counted). The load generator is a separate process presenting the gateway's SVID on ${settings.connections} keep-alive mTLS connections (plain HTTP for the bare upstream); the decision service is asked from the \`edge\` proxy's SVID, the client's certificate in XFCC.`,
    `- Each slice, from a fresh load-generator process: warm-up on one connection (≥ ${settings.warmupSeconds} s — ${settings.firstWarmupSeconds} s on a target's first slice — and one full token rotation), open loop at 200 then at 1,000 rps (0.5 s unrecorded, then ${settings.measureSeconds} s each), then a saturated closed loop on ${settings.connections} connections (0.5 s unrecorded, ${settings.measureSeconds} s). Open loop: sent on schedule by a pacer thread, each request timed from its scheduled time (no coordinated omission); the generator itself sent with a lag of p50 ${ms(lag('sendLagP50Ms'))} ms / p99 ${ms(lag('sendLagP99Ms'))} ms, included in every row alike.`,
    `- Server CPU: utime + stime from /proc/<pid>/stat of every server-side process of the target (upstream + proxy; nginx master + worker) over the measured window, ÷ answers in it (10 ms clock ticks: windows last seconds). vCPU per 1,000 rps = the hop's own CPU per request at 1,000 rps × 1,000; for the embedded guard, what it adds to the service's process. Control plane: the bench process's CPU over the same window (the monitor's collector ingesting the shipped decisions; not counted as server CPU). RSS: VmRSS, idle after start and at the end of the measured windows; the Node processes run the TypeScript sources (Node's type stripping adds about 18 MB to each), and the embedded guard's figure is its process less the bare upstream's.`,
    ...(info.nginxSkipped === null ? [] : [`- (d) nginx **skipped**: ${info.nginxSkipped}`]),
    '',
    '### Latency added per hop at light load (open loop), ms',
    '',
    ...latencyTable(results, hops),
    '',
    ...perRoundLines(results, hops),
    '',
    '### Capacity and cost',
    '',
    ...costTable(results, hops, settings.connections),
    '',
    '### Memory (RSS, MB)',
    '',
    ...memoryTable(results, info.targets, info.idle),
    '',
    '### Decision service',
    '',
    ...authzTable(results, info.targets, settings.connections),
    '',
    '### Beside Istio',
    '',
    `${ANCHORS_SOURCE}; ours are from this run on this machine, with the tiny JSON answer above. Read them as orders of magnitude, not a ranking.`,
    '',
    ...istioTable(results, hops),
  ].join('\n');
}
