/**
 * `npm run bench:guard` — what the guard costs. In one run, over keep-alive mTLS with the load
 * generator in a separate process: bare Fastify, guarded Fastify (steady state, 1,000 distinct
 * Txn-Tokens in rotation) and naive (verify + authorize every request, no caches), each saturated and
 * then at light load (one connection); each server in a process of its own; then, in process, cold-path Txn-Token verification against raw
 * node:crypto and the steady-state cost of `guard.pipeline.admit`. The machine is small and shared,
 * so the three variants run in rounds and the best round (highest rps) of each is reported.
 * Prints the tables, writes them to docs/benchmarks.md, and ends stdout with one JSON line:
 *   {"bareRps":…,"guardedRps":…,"naiveRps":…,"ratio":…,"p99AddedMs":…}
 * (rps and ratio from the best round of each variant; p99AddedMs at light load, where queueing does
 * not hide the guard's own latency — the saturated p99 difference is in the table).
 * Progress goes to stderr. Any non-200 answer makes the run invalid: it fails with exit code 1.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { measureAdmitCost } from './lib/admit-cost.ts';
import { measureColdPath } from './lib/cold-path.ts';
import type { LoadReport } from './lib/protocol.ts';
import { renderMarkdown, summarize, bestPerVariant, type BenchSettings, type RoundResult, type ServerCpu } from './lib/report.ts';
import { runLoad } from './lib/run-load.ts';
import { startServerProcess, type CpuSample } from './lib/run-server.ts';
import { serverWorld, VARIANTS, type ServerWorld, type Variant } from './lib/servers.ts';
import { createBenchWorld, mintCustomerTokens, type BenchWorld } from './lib/world.ts';

const DOCS_FILE = fileURLToPath(new URL('../docs/benchmarks.md', import.meta.url));

function envNumber(name: string, fallback: number, min: number, max: number): number {
  const raw = process.env[name];
  if (raw === undefined || raw === '') return fallback;
  const value = Number(raw);
  if (!Number.isFinite(value) || value < min || value > max) throw new TypeError(`${name} must be a number between ${min} and ${max}, e.g. ${name}=${fallback}; got ${JSON.stringify(raw)}`);
  return value;
}

const settings: BenchSettings = {
  rounds: Math.round(envNumber('BENCH_ROUNDS', 3, 1, 10)),
  connections: Math.round(envNumber('BENCH_CONNECTIONS', 16, 1, 256)),
  // Long enough for the JIT to settle: per-request CPU still falls for the first ~40,000 requests.
  warmupSeconds: envNumber('BENCH_WARMUP_SECONDS', 5, 0, 60),
  measureSeconds: envNumber('BENCH_SECONDS', 8, 1, 120),
  lightSeconds: envNumber('BENCH_LIGHT_SECONDS', 3, 1, 60),
  tokens: 1_000,
  coldTokens: 2_000,
};

/** BENCH_VARIANTS=guarded (a comma-separated subset) is for profiling: it runs only those and writes nothing. */
const variants = (process.env.BENCH_VARIANTS ?? VARIANTS.join(',')).split(',').map((name) => {
  const variant = VARIANTS.find((known) => known === name.trim());
  if (variant === undefined) throw new TypeError(`BENCH_VARIANTS lists ${JSON.stringify(name)}; use a subset of ${VARIANTS.join(',')}`);
  return variant;
});
const fullRun = VARIANTS.every((variant) => variants.includes(variant));

const progress = (message: string) => console.error(`[bench] ${message}`);


function check(variant: Variant, round: number, what: string, report: LoadReport): void {
  if (report.non200 > 0 || report.errors > 0 || report.requests === 0) {
    throw new Error(`INVALID BENCHMARK: ${variant} (round ${round}, ${what}) answered ${report.non200} non-200 responses and ${report.errors} transport errors; ${report.requests} measured requests; statuses ${JSON.stringify(report.statuses)}; first problem: ${report.firstProblem ?? 'none (no request completed)'}`);
  }
}

/** Server CPU per request over the measured window, or null if the window was not sampled. */
async function cpuPerRequest(window: Partial<Record<'start' | 'end', Promise<CpuSample>>>): Promise<ServerCpu | null> {
  if (!window.start || !window.end) return null;
  const [start, end] = await Promise.all([window.start, window.end]);
  const requests = end.requests - start.requests;
  if (requests <= 0) return null;
  return { processUs: (end.cpuMicros - start.cpuMicros) / requests, mainThreadUs: (end.mainActiveMicros - start.mainActiveMicros) / requests };
}

async function runVariant(world: BenchWorld, servers: ServerWorld, variant: Variant, round: number, tokens: readonly string[], scratch: string): Promise<RoundResult> {
  const auditFile = join(scratch, `audit-${variant}-${round}.jsonl`);
  const server = await startServerProcess(variant, servers, auditFile);
  const job = {
    origin: server.origin,
    path: `/orders/${round}042`,
    certPem: world.gateway.chainPem,
    keyPem: world.gateway.keyPem,
    caPem: world.caPem,
    tokens,
  };
  let report: LoadReport;
  let light: LoadReport;
  const window: Partial<Record<'start' | 'end', Promise<CpuSample>>> = {};
  try {
    report = await runLoad({
      ...job,
      connections: settings.connections,
      warmupMs: settings.warmupSeconds * 1000,
      warmupRequests: tokens.length + settings.connections,
      maxWarmupMs: settings.warmupSeconds * 1000 + 20_000,
      measureMs: settings.measureSeconds * 1000,
    }, (phase) => { window[phase] = server.cpu(); });
    check(variant, round, 'saturated', report);
    // Same server, every token already seen: one connection, one request at a time, no queueing.
    light = await runLoad({ ...job, connections: 1, warmupMs: 300, warmupRequests: 200, maxWarmupMs: 5_000, measureMs: settings.lightSeconds * 1000 });
    check(variant, round, 'light load', light);
  } finally {
    await server.close();
  }
  const result: RoundResult = { round, variant, report, light, auditLines: server.auditLines(), serverCpu: await cpuPerRequest(window) };
  progress(`round ${round} ${variant.padEnd(7)} ${Math.round(report.rps)} rps${result.serverCpu ? `  server ${result.serverCpu.processUs.toFixed(1)} µs/req` : ''}  p50 ${report.p50Ms.toFixed(3)} ms  p99 ${report.p99Ms.toFixed(3)} ms  (warm-up ${report.warmupSeconds.toFixed(1)} s) | light: p50 ${light.p50Ms.toFixed(3)} ms  p99 ${light.p99Ms.toFixed(3)} ms${result.auditLines === null ? '' : `  | audit events ${result.auditLines}`}`);
  return result;
}

async function main(): Promise<void> {
  const startedAt = performance.now();
  const loadBefore = loadavg();
  const scratch = mkdtempSync(join(tmpdir(), 'lockstep-bench-'));
  try {
    progress('building the world: test CA, SVIDs, Txn-Token minter, signed policy bundle');
    const world = await createBenchWorld();
    const servers = serverWorld(world);
    const results: RoundResult[] = [];
    for (let round = 1; round <= settings.rounds; round++) {
      // Fresh tokens per round keep them well inside their 5-minute lifetime however long the run.
      const tokens = await mintCustomerTokens(world.minter, settings.tokens);
      for (const variant of variants) results.push(await runVariant(world, servers, variant, round, tokens, scratch));
    }
    if (!fullRun) {
      progress('BENCH_VARIANTS is a subset: no cold path, no docs/benchmarks.md, no summary line');
      return;
    }
    progress(`cold path: ${settings.coldTokens} fresh tokens through the guard's txn-token step vs node:crypto`);
    const cold = await measureColdPath(world, settings.coldTokens, 50);
    progress('admit cost: guard.pipeline.admit in process, steady state, with and without the audit sink');
    const admit = await measureAdmitCost(world, await mintCustomerTokens(world.minter, settings.tokens), scratch);

    const markdown = renderMarkdown(settings, results, cold, admit, loadBefore, (performance.now() - startedAt) / 1000);
    writeFileSync(DOCS_FILE, markdown);
    process.stdout.write(`${markdown}\n`);
    progress(`wrote ${DOCS_FILE}`);
    process.stdout.write(`${JSON.stringify(summarize(bestPerVariant(results)))}\n`);
  } finally {
    rmSync(scratch, { recursive: true, force: true });
  }
}

main().catch((error: Error) => {
  console.error(`[bench] ${error.stack ?? error.message}`);
  process.exitCode = 1;
});
