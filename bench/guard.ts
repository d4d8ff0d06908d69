/**
 * `npm run bench:guard` — what the guard costs. In one run, over keep-alive mTLS with the load
 * generator in a separate process: bare Fastify, guarded Fastify (steady state, 1,000 distinct
 * Txn-Tokens in rotation), guarded with no audit subscriber, and naive (verify + authorize every
 * request, no caches); each server in a process of its own. Each slice saturates the server, then
 * (a second generator, bench/lib/mesh-load.ts) drives it on one connection and in an open loop at a
 * fixed 1,000 rps (timed from the scheduled send time: no coordinated omission). The server process
 * samples its own CPU (all threads, and the main thread alone) and memory at the edges of each
 * measured window. Then, in process, cold-path Txn-Token verification against raw node:crypto and the
 * steady-state cost of `guard.pipeline.admit`.
 *
 * The machine is small and shared, and its speed drifts by tens of percent over tens of seconds, so
 * every server stays up for the whole run and the variants take turns in short slices (rounds, with
 * the order rotating each round): each variant meets the same slow and fast periods. Every "added"
 * figure and ratio is paired per round (guarded against that round's bare) before the median over
 * rounds is taken; the throughput headline comes from the median round by guarded ÷ bare.
 *
 * Knobs (environment): BENCH_ROUNDS (default 7), BENCH_SECONDS (saturated window, 4),
 * BENCH_OPEN_SECONDS (1,000-rps window, 2), BENCH_LIGHT_SECONDS (one-connection window, 1),
 * BENCH_CONNECTIONS (16), BENCH_WARMUP_SECONDS (first slice of each server, 5); the defaults take
 * about 5 minutes. BENCH_VARIANTS=guarded (a comma-separated subset) is for profiling and writes nothing.
 * BENCH_AUDIT_WRITER=thread runs the guarded server's audit writer on a thread of its own instead of
 * its request thread (`audit.writer`); BENCH_VARIANTS=bare,guarded,guarded-other-writer compares the
 * two writers in the same rounds.
 *
 * Prints the tables, writes them to docs/benchmarks.md, and ends stdout with one JSON line (Summary in
 * bench/lib/report.ts):
 *   {"bareRps":…,"guardedRps":…,"naiveRps":…,"ratio":…,"p99AddedMs":…,"cpuRatio":…,"cpuRatioMainThread":…,
 *    "rssAddedMb":…,"p50AddedMs1000":…,"p99AddedMs1000":…,"vcpuPer1000Rps":…}
 * ratio = guardedRps / bareRps from the median round; p99AddedMs = guarded − bare p99 on one connection;
 * cpuRatio = bare ÷ (bare + added) server process CPU per request, saturated (cpuRatioMainThread: the
 * main thread's alone); rssAddedMb = guarded − bare RSS at the end of the saturated window, MB = 10^6
 * bytes; p50/p99AddedMs1000 = guarded − bare in the 1,000-rps open loop; vcpuPer1000Rps = the guarded
 * server process's CPU seconds per wall second in that loop, scaled to 1,000 rps. All medians over rounds.
 * Progress goes to stderr. Any non-200 answer makes the run invalid: it fails with exit code 1; so does an
 * audited server whose audit file does not hold exactly one decision event per request it answered.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { measureAdmitCost } from './lib/admit-cost.ts';
import { measureAuditCost } from './lib/audit-cost.ts';
import { measureCacheBytes } from './lib/cache-bytes.ts';
import { keptSections } from './lib/docs-section.ts';
import { measureColdPath } from './lib/cold-path.ts';
import { runMeshLoad } from './lib/mesh-processes.ts';
import type { MeshLoadReport } from './lib/mesh-protocol.ts';
import type { LoadReport } from './lib/protocol.ts';
import {
  OPEN_RATE,
  renderMarkdown,
  summarize,
  vcpuPer1000Rps,
  type AuditCount,
  type BenchSettings,
  type RoundResult,
  type WindowCpu,
} from './lib/report.ts';
import { runLoad } from './lib/run-load.ts';
import { startServerProcess, type CpuSample, type ServerProcess } from './lib/run-server.ts';
import { OPTIONAL_VARIANTS, serverWorld, VARIANTS, type Variant } from './lib/servers.ts';
import { createBenchWorld, mintCustomerTokens, type BenchWorld } from './lib/world.ts';
import { envNumber } from './lib/dispatch-get.ts';

const DOCS_FILE = fileURLToPath(new URL('../docs/benchmarks.md', import.meta.url));

const settings: BenchSettings = {
  rounds: Math.round(envNumber('BENCH_ROUNDS', 7, 1, 20)),
  connections: Math.round(envNumber('BENCH_CONNECTIONS', 16, 1, 256)),
  // Long enough for the JIT to settle: per-request CPU still falls for the first ~40,000 requests.
  warmupSeconds: envNumber('BENCH_WARMUP_SECONDS', 5, 0, 60),
  sliceWarmupSeconds: 1,
  measureSeconds: envNumber('BENCH_SECONDS', 4, 1, 120),
  openSeconds: envNumber('BENCH_OPEN_SECONDS', 2, 1, 120),
  openWarmupSeconds: 0.5,
  lightSeconds: envNumber('BENCH_LIGHT_SECONDS', 1, 1, 60),
  tokens: 1_000,
  coldTokens: 2_000,
};

/** BENCH_VARIANTS=guarded (a comma-separated subset) is for profiling: it runs only those and writes nothing. */
const variants = (process.env.BENCH_VARIANTS ?? VARIANTS.join(',')).split(',').map((name) => {
  const variant = [...VARIANTS, ...OPTIONAL_VARIANTS].find((known) => known === name.trim());
  if (variant === undefined)
    throw new TypeError(
      `BENCH_VARIANTS lists ${JSON.stringify(name)}; use a subset of ${[...VARIANTS, ...OPTIONAL_VARIANTS].join(',')}`,
    );
  return variant;
});
const fullRun = VARIANTS.every((variant) => variants.includes(variant)) && variants.length === VARIANTS.length;

const progress = (message: string) => console.error(`[bench] ${message}`);

function check(variant: Variant, round: number, what: string, report: LoadReport | MeshLoadReport): void {
  const measured = 'phases' in report ? report.phases.map((phase) => phase.requests) : [report.requests];
  if (report.non200 > 0 || report.errors > 0 || measured.includes(0)) {
    throw new Error(
      `INVALID BENCHMARK: ${variant} (round ${round}, ${what}) answered ${report.non200} non-200 responses and ${report.errors} transport errors; measured requests ${measured.join(' + ')}; statuses ${JSON.stringify(report.statuses)}; first problem: ${report.firstProblem ?? 'none (a window completed no request)'}`,
    );
  }
}

/** Answers a load generator received over its whole job (warm-ups included); check() has made sure all were 200. */
const answersOf = (report: LoadReport | MeshLoadReport) =>
  Object.values(report.statuses).reduce((total, count) => total + count, 0);

type Window = Partial<Record<'start' | 'end', Promise<CpuSample>>>;

/** What the server spent over one measured window, from its own samples at the window's edges; and the end sample. */
async function windowCost(
  variant: Variant,
  round: number,
  what: string,
  window: Window,
): Promise<{ cpu: WindowCpu; end: CpuSample }> {
  if (!window.start || !window.end)
    throw new Error(`${variant} (round ${round}, ${what}): the load generator never marked its measured window`);
  const [start, end] = await Promise.all([window.start, window.end]);
  const requests = end.requests - start.requests;
  const seconds = (end.atMs - start.atMs) / 1000;
  if (requests <= 0 || seconds <= 0)
    throw new Error(`${variant} (round ${round}, ${what}): the server answered no request in the measured window`);
  const cpuMicros = end.cpuMicros - start.cpuMicros;
  return {
    cpu: {
      processUs: cpuMicros / requests,
      mainThreadUs: (end.mainActiveMicros - start.mainActiveMicros) / requests,
      cpuPerSecond: cpuMicros / 1e6 / seconds,
      rps: requests / seconds,
    },
    end,
  };
}

/**
 * One slice: saturate the (already running) server of `variant`; then, from a second generator with
 * the same certificate and token rotation, one connection at a time and an open loop at OPEN_RATE. The
 * first slice of a server warms it up for `warmupSeconds`; later ones only until the load generator
 * (a fresh process) is warm and every token of the round has been seen once. Resolves with the
 * slice's figures and how many answers the generators received.
 */
async function runSlice(
  server: ServerProcess,
  variant: Variant,
  round: number,
  world: BenchWorld,
  tokens: readonly string[],
  first: boolean,
): Promise<{ result: RoundResult; answers: number }> {
  const tls = { certPem: world.gateway.chainPem, keyPem: world.gateway.keyPem, caPem: world.caPem };
  const warmupSeconds = first ? settings.warmupSeconds : settings.sliceWarmupSeconds;
  const saturatedWindow: Window = {};
  const report = await runLoad(
    {
      origin: server.origin,
      path: `/orders/${round}042`,
      ...tls,
      tokens,
      connections: settings.connections,
      warmupMs: warmupSeconds * 1000,
      warmupRequests: tokens.length + settings.connections,
      maxWarmupMs: warmupSeconds * 1000 + 20_000,
      measureMs: settings.measureSeconds * 1000,
    },
    (edge) => {
      saturatedWindow[edge] = server.cpu();
    },
  );
  check(variant, round, 'saturated', report);
  const saturated = await windowCost(variant, round, 'saturated', saturatedWindow);

  // Same server, every token already seen: one connection, one request at a time (no queueing; it also
  // warms the fresh generator up), then requests on a fixed schedule whatever the answers do.
  const openWindow: Window = {};
  const after = await runMeshLoad(
    {
      origin: server.origin,
      tls,
      pathPrefix: `/orders/${round}`,
      grpc: null,
      headers: {},
      tokens,
      connections: settings.connections,
      phases: [
        {
          kind: 'closed',
          name: 'light',
          loops: 1,
          warmupMs: 300,
          warmupRequests: 200,
          maxWarmupMs: 5_000,
          measureMs: settings.lightSeconds * 1000,
        },
        {
          kind: 'open',
          name: 'open',
          rate: OPEN_RATE,
          warmupMs: settings.openWarmupSeconds * 1000,
          measureMs: settings.openSeconds * 1000,
        },
      ],
    },
    (phase, edge) => {
      if (phase === 'open') openWindow[edge] = server.cpu();
    },
  );
  check(variant, round, `light load and ${OPEN_RATE} rps`, after);
  const [light, open] = after.phases;
  if (light === undefined || open === undefined)
    throw new Error(`${variant} (round ${round}): the load generator reported ${after.phases.length} phases, not 2`);
  const openCost = await windowCost(variant, round, `${OPEN_RATE} rps`, openWindow);

  const result: RoundResult = {
    round,
    variant,
    report,
    serverCpu: saturated.cpu,
    memory: saturated.end.memory,
    open,
    openCpu: openCost.cpu,
    light,
  };
  progress(
    `round ${round} ${variant.padEnd(7)} ${Math.round(report.rps)} rps  server ${saturated.cpu.processUs.toFixed(1)} µs/req  p50 ${report.p50Ms.toFixed(3)} ms  p99 ${report.p99Ms.toFixed(3)} ms  RSS ${(saturated.end.memory.rssBytes / 1e6).toFixed(1)} MB  (warm-up ${report.warmupSeconds.toFixed(1)} s)` +
      ` | light: p99 ${light.p99Ms.toFixed(3)} ms | ${OPEN_RATE} rps: p50 ${open.p50Ms.toFixed(3)} ms  p99 ${open.p99Ms.toFixed(3)} ms  ${vcpuPer1000Rps(openCost.cpu).toFixed(3)} vCPU/1k rps`,
  );
  return { result, answers: answersOf(report) + answersOf(after) };
}

/** Round `round` starts with a different variant each time, so that no variant always follows the same one. */
function rotated<T>(items: readonly T[], round: number): T[] {
  const shift = (round - 1) % items.length;
  return [...items.slice(shift), ...items.slice(0, shift)];
}

async function main(): Promise<void> {
  const startedAt = performance.now();
  const loadBefore = loadavg();
  const scratch = mkdtempSync(join(tmpdir(), 'lockstep-bench-'));
  try {
    progress('building the world: test CA, SVIDs, Txn-Token minter, signed policy bundle');
    const world = await createBenchWorld();
    const serverWorldData = serverWorld(world);
    const servers = new Map<Variant, ServerProcess>();
    const results: RoundResult[] = [];
    const answers = new Map<Variant, number>();
    const served: AuditCount[] = [];
    try {
      for (const variant of variants)
        servers.set(
          variant,
          await startServerProcess(variant, serverWorldData, join(scratch, `audit-${variant}.jsonl`)),
        );
      for (let round = 1; round <= settings.rounds; round++) {
        // Fresh tokens per round keep them well inside their 5-minute lifetime however long the run.
        const tokens = await mintCustomerTokens(world.minter, settings.tokens);
        for (const variant of rotated(variants, round)) {
          const slice = await runSlice(
            servers.get(variant) as ServerProcess,
            variant,
            round,
            world,
            tokens,
            round === 1,
          );
          results.push(slice.result);
          answers.set(variant, (answers.get(variant) ?? 0) + slice.answers);
        }
      }
      for (const [variant, server] of servers) {
        const { requests } = await server.cpu();
        await server.close();
        const auditLines = server.auditLines();
        if (auditLines !== null)
          served.push({ variant, requests, answersCounted: answers.get(variant) ?? 0, auditLines });
      }
    } finally {
      await Promise.allSettled([...servers.values()].map((server) => server.close()));
    }
    if (!fullRun) {
      progress('BENCH_VARIANTS is a subset: no cold path, no docs/benchmarks.md, no summary line');
      return;
    }
    progress(`cold path: ${settings.coldTokens} fresh tokens through the guard's txn-token step vs node:crypto`);
    const cold = await measureColdPath(world, settings.coldTokens, 50);
    progress('admit cost: guard.pipeline.admit in process, steady state, with and without the audit sink');
    const admit = await measureAdmitCost(world, await mintCustomerTokens(world.minter, settings.tokens), scratch);
    progress('cache bytes: heap held per cached token, in process, against what the caches charge');
    const cacheBytes = await measureCacheBytes(world);
    progress('audit cost: recording into the ring, and the writer encoding and writing lines, in process');
    const audit = await measureAuditCost(scratch);

    const markdown = renderMarkdown(
      settings,
      results,
      served,
      cold,
      admit,
      cacheBytes,
      audit,
      loadBefore,
      (performance.now() - startedAt) / 1000,
    );
    // Sections written by the other benches (control plane) stay as they were.
    const kept = keptSections(DOCS_FILE);
    writeFileSync(DOCS_FILE, kept === '' ? markdown : `${markdown.trimEnd()}\n\n${kept}`);
    process.stdout.write(`${markdown}\n`);
    progress(`wrote ${DOCS_FILE}`);
    process.stdout.write(`${JSON.stringify(summarize(results))}\n`);
    for (const { variant, requests, answersCounted, auditLines } of served)
      if (auditLines !== requests || answersCounted !== requests) {
        progress(
          `INVALID BENCHMARK: ${variant} answered ${requests} requests, its load generators counted ${answersCounted} answers, and it wrote ${auditLines} decision events to its audit file; all three must be equal (one decision event per request)`,
        );
        process.exitCode = 1;
      }
  } finally {
    rmSync(scratch, { recursive: true, force: true });
  }
}

main().catch((error: Error) => {
  console.error(`[bench] ${error.stack ?? error.message}`);
  process.exitCode = 1;
});
