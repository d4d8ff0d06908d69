/**
 * `npm run bench:guard` — what the guard costs. In one run, over keep-alive mTLS with the load
 * generator in a separate process: bare Fastify, guarded Fastify (steady state, 1,000 distinct
 * Txn-Tokens in rotation) and naive (verify + authorize every request, no caches), each saturated and
 * then at light load (one connection); each server in a process of its own; then, in process, cold-path Txn-Token verification against raw
 * node:crypto and the steady-state cost of `guard.pipeline.admit`. The machine is small and shared, and
 * its speed drifts by tens of percent over tens of seconds, so every server stays up for the whole run
 * and the variants take turns in short slices (rounds, with the order rotating each round): each
 * variant meets the same slow and fast periods. The headline comes from the median round by
 * guarded ÷ bare (the two ran in the same round, minutes apart at most).
 * Prints the tables, writes them to docs/benchmarks.md, and ends stdout with one JSON line:
 *   {"bareRps":…,"guardedRps":…,"naiveRps":…,"ratio":…,"p99AddedMs":…}
 * (rps and ratio = guardedRps / bareRps from the median round; p99AddedMs = the median over rounds of
 * guarded − bare at light load, where queueing does not hide the guard's own latency — the saturated
 * p99 difference is in the table).
 * Progress goes to stderr. Any non-200 answer makes the run invalid: it fails with exit code 1.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { measureAdmitCost } from './lib/admit-cost.ts';
import { keptSections } from './lib/docs-section.ts';
import { measureColdPath } from './lib/cold-path.ts';
import type { LoadReport } from './lib/protocol.ts';
import {
  renderMarkdown,
  summarize,
  type AuditCount,
  type BenchSettings,
  type RoundResult,
  type ServerCpu,
} from './lib/report.ts';
import { runLoad } from './lib/run-load.ts';
import { startServerProcess, type CpuSample, type ServerProcess } from './lib/run-server.ts';
import { serverWorld, VARIANTS, type Variant } from './lib/servers.ts';
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
  lightSeconds: envNumber('BENCH_LIGHT_SECONDS', 2, 1, 60),
  tokens: 1_000,
  coldTokens: 2_000,
};

/** BENCH_VARIANTS=guarded (a comma-separated subset) is for profiling: it runs only those and writes nothing. */
const variants = (process.env.BENCH_VARIANTS ?? VARIANTS.join(',')).split(',').map((name) => {
  const variant = VARIANTS.find((known) => known === name.trim());
  if (variant === undefined)
    throw new TypeError(`BENCH_VARIANTS lists ${JSON.stringify(name)}; use a subset of ${VARIANTS.join(',')}`);
  return variant;
});
const fullRun = VARIANTS.every((variant) => variants.includes(variant));

const progress = (message: string) => console.error(`[bench] ${message}`);

function check(variant: Variant, round: number, what: string, report: LoadReport): void {
  if (report.non200 > 0 || report.errors > 0 || report.requests === 0) {
    throw new Error(
      `INVALID BENCHMARK: ${variant} (round ${round}, ${what}) answered ${report.non200} non-200 responses and ${report.errors} transport errors; ${report.requests} measured requests; statuses ${JSON.stringify(report.statuses)}; first problem: ${report.firstProblem ?? 'none (no request completed)'}`,
    );
  }
}

/** Server CPU per request over the measured window, or null if the window was not sampled. */
async function cpuPerRequest(window: Partial<Record<'start' | 'end', Promise<CpuSample>>>): Promise<ServerCpu | null> {
  if (!window.start || !window.end) return null;
  const [start, end] = await Promise.all([window.start, window.end]);
  const requests = end.requests - start.requests;
  if (requests <= 0) return null;
  return {
    processUs: (end.cpuMicros - start.cpuMicros) / requests,
    mainThreadUs: (end.mainActiveMicros - start.mainActiveMicros) / requests,
  };
}

/**
 * One slice: saturate the (already running) server of `variant`, then drive it at light load. The
 * first slice of a server warms it up for `warmupSeconds`; later ones only until the load generator
 * (a fresh process) is warm and every token of the round has been seen once.
 */
async function runSlice(
  server: ServerProcess,
  variant: Variant,
  round: number,
  world: BenchWorld,
  tokens: readonly string[],
  first: boolean,
): Promise<RoundResult> {
  const job = {
    origin: server.origin,
    path: `/orders/${round}042`,
    certPem: world.gateway.chainPem,
    keyPem: world.gateway.keyPem,
    caPem: world.caPem,
    tokens,
  };
  const warmupSeconds = first ? settings.warmupSeconds : settings.sliceWarmupSeconds;
  const window: Partial<Record<'start' | 'end', Promise<CpuSample>>> = {};
  const report = await runLoad(
    {
      ...job,
      connections: settings.connections,
      warmupMs: warmupSeconds * 1000,
      warmupRequests: tokens.length + settings.connections,
      maxWarmupMs: warmupSeconds * 1000 + 20_000,
      measureMs: settings.measureSeconds * 1000,
    },
    (phase) => {
      window[phase] = server.cpu();
    },
  );
  check(variant, round, 'saturated', report);
  // Same server, every token already seen: one connection, one request at a time, no queueing.
  const light = await runLoad({
    ...job,
    connections: 1,
    warmupMs: 300,
    warmupRequests: 200,
    maxWarmupMs: 5_000,
    measureMs: settings.lightSeconds * 1000,
  });
  check(variant, round, 'light load', light);
  const result: RoundResult = { round, variant, report, light, serverCpu: await cpuPerRequest(window) };
  progress(
    `round ${round} ${variant.padEnd(7)} ${Math.round(report.rps)} rps${result.serverCpu ? `  server ${result.serverCpu.processUs.toFixed(1)} µs/req` : ''}  p50 ${report.p50Ms.toFixed(3)} ms  p99 ${report.p99Ms.toFixed(3)} ms  (warm-up ${report.warmupSeconds.toFixed(1)} s) | light: p50 ${light.p50Ms.toFixed(3)} ms  p99 ${light.p99Ms.toFixed(3)} ms`,
  );
  return result;
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
        for (const variant of rotated(variants, round))
          results.push(
            await runSlice(servers.get(variant) as ServerProcess, variant, round, world, tokens, round === 1),
          );
      }
      for (const [variant, server] of servers) {
        const { requests } = await server.cpu();
        await server.close();
        const auditLines = server.auditLines();
        if (auditLines !== null) served.push({ variant, requests, auditLines });
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

    const markdown = renderMarkdown(
      settings,
      results,
      served,
      cold,
      admit,
      loadBefore,
      (performance.now() - startedAt) / 1000,
    );
    // Sections written by the other benches (control plane) stay as they were.
    const kept = keptSections(DOCS_FILE);
    writeFileSync(DOCS_FILE, kept === '' ? markdown : `${markdown.trimEnd()}\n\n${kept}`);
    process.stdout.write(`${markdown}\n`);
    progress(`wrote ${DOCS_FILE}`);
    process.stdout.write(`${JSON.stringify(summarize(results))}\n`);
  } finally {
    rmSync(scratch, { recursive: true, force: true });
  }
}

main().catch((error: Error) => {
  console.error(`[bench] ${error.stack ?? error.message}`);
  process.exitCode = 1;
});
