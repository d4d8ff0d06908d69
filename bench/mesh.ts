/**
 * `npm run bench:mesh` — what mesh mode costs, measured in one run against the same upstream (a tiny
 * JSON answer on node:http):
 *
 *   (a) bare      the upstream over plain HTTP: the baseline every "added" figure is taken against
 *   (b) guard     the same handler in the embedded guard (node:http + lockstepHttp, as the sidecar uses)
 *   (c) sidecar   @lockstep/proxy createSidecar in its own process, in front of the upstream
 *   (d) nginx     Debian's nginx terminating mTLS, keep-alive to the upstream, no authz: the mesh-style
 *                 baseline (skipped, saying so, when /usr/sbin/nginx is absent; `.ci/run` installs it)
 *   (e) authz     the decision service (createAuthzServer) asked as Envoy's HTTP ext_authz, with XFCC,
 *                 from the trusted `edge` proxy's SVID; and, when it serves one, as Envoy's gRPC
 *                 ext_authz (`Authorization/Check`, the client's certificate in the CheckRequest)
 *
 * with a real control plane, real SVIDs, real Txn-Tokens from its Txn-Token Service and real Cedar.
 * Per target: added p50/p99 at a light open-loop rate (200 and 1,000 rps, timed from the scheduled send
 * time), throughput at saturation, server CPU per request from /proc/<pid>/stat of every server-side
 * process, the hop's vCPU per 1,000 rps and RSS — beside Istio's published per-proxy figures. All
 * targets stay up for the whole run and take turns in rounds (the order rotates), so that each meets the
 * machine's slow and fast periods alike; figures are medians over rounds, "added" ones paired per round.
 *
 *   node bench/mesh.ts                 3 rounds, ~3–4 minutes; writes its section of docs/benchmarks.md
 *   node bench/mesh.ts --rounds 5      more rounds
 *   node bench/mesh.ts --quick         1 short round (CI-like speed); prints only, writes nothing
 *   BENCH_MESH_TARGETS=bare,nginx node bench/mesh.ts   a subset, for profiling; writes nothing
 *   BENCH_MESH_PROFILE=/tmp/prof node bench/mesh.ts   also a V8 CPU profile of each server process, written
 *                                    as <role>-<pid>.cpuprofile when it exits; summarise one with
 *                                    `node bench/cpuprofile-top.ts <file> --timeline`, then `--since/--until`
 *
 * Prints the Markdown, then ends stdout with one JSON line (MeshSummary). Progress goes to stderr. Any
 * non-200 answer makes the run invalid: it fails with exit code 1. Every process it started and its
 * temporary directory are removed however it ends.
 */
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { writeSection } from './lib/docs-section.ts';
import { killEverything, runMeshLoad, startMeshServer, startNginx, type ServerHandle } from './lib/mesh-processes.ts';
import { SERVICE, type LoadPhase, type MeshLoadJob, type MeshLoadReport } from './lib/mesh-protocol.ts';
import {
  LIGHT_RATES,
  PHASES,
  TARGETS,
  renderMarkdown,
  summarize,
  type MeshSettings,
  type PhaseName,
  type RunInfo,
  type SliceResult,
  type Target,
  type WindowCost,
} from './lib/mesh-report.ts';
import { createMeshWorld, TRUST_DOMAIN, type MeshWorld } from './lib/mesh-world.ts';
import { procAvailable, processCpuMicros, residentBytes } from './lib/proc-stat.ts';
import { envNumber } from './lib/dispatch-get.ts';

const DOCS_FILE = fileURLToPath(new URL('../docs/benchmarks.md', import.meta.url));
const NGINX_BINARIES = ['/usr/sbin/nginx', '/usr/local/sbin/nginx'];
const progress = (message: string) => console.error(`[bench:mesh] ${message}`);

function readSettings(): MeshSettings {
  const { values } = parseArgs({
    options: { quick: { type: 'boolean', default: false }, rounds: { type: 'string' } },
    strict: true,
  });
  const quick = values.quick || process.env.BENCH_MESH_QUICK === '1';
  let rounds = Math.round(envNumber('BENCH_MESH_ROUNDS', quick ? 1 : 3, 1, 20));
  if (values.rounds !== undefined) {
    rounds = Number(values.rounds);
    if (!Number.isInteger(rounds) || rounds < 1 || rounds > 20)
      throw new TypeError(`--rounds must be a whole number from 1 to 20, e.g. --rounds 3; got ${values.rounds}`);
  }
  const only = process.env.BENCH_MESH_TARGETS?.split(',').map((name) => name.trim()) ?? null;
  const unknown = only?.find((name) => !(TARGETS as readonly string[]).includes(name));
  if (unknown !== undefined || only?.includes('bare') === false)
    throw new TypeError(
      `BENCH_MESH_TARGETS is a comma-separated subset of ${TARGETS.join(',')} that includes bare, e.g. bare,sidecar; got ${JSON.stringify(process.env.BENCH_MESH_TARGETS)}`,
    );
  return {
    quick,
    only: only as Target[] | null,
    rounds,
    connections: Math.round(envNumber('BENCH_MESH_CONNECTIONS', 16, 1, 256)),
    measureSeconds: envNumber('BENCH_MESH_SECONDS', quick ? 1.5 : 3, 0.5, 60),
    firstWarmupSeconds: quick ? 2 : 3,
    warmupSeconds: 1,
    tokens: quick ? 300 : 1_000,
  };
}

/**
 * The order of round `round`: rotated by one target each round, and reversed every other round, so that
 * no target always starts a round nor always follows the same one (whose after-effects it would inherit).
 */
function orderOf<T>(items: readonly T[], round: number): T[] {
  const shift = (round - 1) % items.length;
  const order = [...items.slice(shift), ...items.slice(0, shift)];
  return round % 2 === 0 ? order.reverse() : order;
}

/**
 * Waits until the previous slice's after-effects are over: the servers and this process (the control
 * plane, whose collector may still be ingesting the audit events of a saturated slice) together use
 * less than 5% of a core over half a second. Resolves with the seconds it waited (at most 20).
 */
async function settle(pids: readonly number[]): Promise<number> {
  const started = performance.now();
  const all = [...new Set([...pids, process.pid])];
  for (;;) {
    const before = processCpuMicros(all);
    await new Promise((resolve) => setTimeout(resolve, 500));
    const waited = (performance.now() - started) / 1000;
    if (processCpuMicros(all) - before < 25_000 || waited > 20) return waited;
  }
}

function nginxBinary(): { binary: string; version: string } | null {
  for (const binary of NGINX_BINARIES) {
    const probe = spawnSync(binary, ['-v'], { encoding: 'utf8' });
    if (probe.status === 0) return { binary, version: (probe.stderr || probe.stdout).trim() };
  }
  return null;
}

/** One target under test: where the load goes and whose CPU counts. */
interface Running {
  readonly target: Target;
  readonly job: Omit<MeshLoadJob, 'tokens' | 'phases' | 'connections'>;
  /** Every server-side process (upstream + proxy). */
  serverPids(): number[];
  /** The hop's own process(es); null for the bare upstream and the embedded guard. */
  hopPids(): number[] | null;
}

/**
 * A slice: warm-up on one connection (JIT, connections, every token of the rotation seen once), the
 * light open-loop rates, then saturation — light load first, so that the memory read at 1,000 rps in
 * the first round is that of a process never yet saturated.
 */
function phasesFor(settings: MeshSettings, first: boolean, tokens: number): LoadPhase[] {
  const measureMs = settings.measureSeconds * 1000;
  const warmupMs = (first ? settings.firstWarmupSeconds : settings.warmupSeconds) * 1000;
  return [
    {
      kind: 'closed',
      name: 'warmup',
      loops: 1,
      warmupMs,
      warmupRequests: tokens + 10,
      maxWarmupMs: warmupMs + 30_000,
      measureMs: 200,
    },
    { kind: 'open', name: 'rps200', rate: LIGHT_RATES.rps200, warmupMs: 500, measureMs },
    { kind: 'open', name: 'rps1000', rate: LIGHT_RATES.rps1000, warmupMs: 500, measureMs },
    { kind: 'closed', name: 'saturated', warmupMs: 500, warmupRequests: 0, maxWarmupMs: 500, measureMs },
  ];
}

function check(target: Target, round: number, report: MeshLoadReport): void {
  if (report.non200 > 0 || report.errors > 0 || report.phases.some((phase) => phase.requests === 0))
    throw new Error(
      `INVALID BENCHMARK: ${target} (round ${round}) answered ${report.non200} non-200 responses and ${report.errors} transport errors; statuses ${JSON.stringify(report.statuses)}; first problem: ${report.firstProblem ?? 'none (a window completed no request)'}`,
    );
}

/** One slice: a fresh load generator runs every phase against `running`; /proc is read at each window's edges. */
async function runSlice(
  running: Running,
  round: number,
  tokens: readonly string[],
  settings: MeshSettings,
  first: boolean,
): Promise<SliceResult> {
  interface Sample {
    readonly atMs: number;
    readonly answered: number;
    readonly serverCpu: number;
    readonly hopCpu: number | null;
    readonly ownCpu: number;
  }
  const starts = new Map<string, Sample>();
  const costs: Partial<Record<PhaseName, WindowCost>> = {};
  const sample = (answered: number): Sample => {
    const hop = running.hopPids();
    return {
      atMs: performance.now(),
      answered,
      serverCpu: processCpuMicros(running.serverPids()),
      hopCpu: hop === null ? null : processCpuMicros(hop),
      ownCpu: processCpuMicros([process.pid]),
    };
  };
  const report = await runMeshLoad(
    { ...running.job, tokens, connections: settings.connections, phases: phasesFor(settings, first, tokens.length) },
    (phase, edge, answered) => {
      if (edge === 'start') {
        starts.set(phase, sample(answered));
        return;
      }
      const start = starts.get(phase);
      if (start === undefined || !(PHASES as readonly string[]).includes(phase)) return;
      const end = sample(answered);
      const requests = end.answered - start.answered;
      const hop = running.hopPids();
      costs[phase as PhaseName] = {
        requests,
        seconds: (end.atMs - start.atMs) / 1000,
        serverUs: (end.serverCpu - start.serverCpu) / requests,
        hopUs: end.hopCpu === null || start.hopCpu === null ? null : (end.hopCpu - start.hopCpu) / requests,
        controlPlaneUs: (end.ownCpu - start.ownCpu) / requests,
        serverRssBytes: residentBytes(running.serverPids()),
        hopRssBytes: hop === null ? null : residentBytes(hop),
      };
    },
  );
  check(running.target, round, report);
  const phases = Object.fromEntries(
    report.phases.filter((phase) => phase.name !== 'warmup').map((phase) => [phase.name, phase]),
  ) as SliceResult['phases'];
  for (const name of PHASES)
    if (phases[name] === undefined || costs[name] === undefined)
      throw new Error(`${running.target} (round ${round}): no measured window for ${name}`);
  const result: SliceResult = { round, target: running.target, phases, cost: costs as SliceResult['cost'] };
  const { saturated, rps200, rps1000 } = result.phases;
  progress(
    `round ${round} ${running.target.padEnd(7)} saturated ${Math.round(saturated.rps)} rps p99 ${saturated.p99Ms.toFixed(3)} ms ` +
      `${result.cost.saturated.serverUs.toFixed(0)} µs/req | 200 rps p50 ${rps200.p50Ms.toFixed(3)} p99 ${rps200.p99Ms.toFixed(3)} | ` +
      `1,000 rps p50 ${rps1000.p50Ms.toFixed(3)} p99 ${rps1000.p99Ms.toFixed(3)} ms, ${result.cost.rps1000.serverUs.toFixed(0)} µs/req`,
  );
  return result;
}

function memoryOf(running: Running): { serverRssBytes: number; hopRssBytes: number | null } {
  const hop = running.hopPids();
  return { serverRssBytes: residentBytes(running.serverPids()), hopRssBytes: hop === null ? null : residentBytes(hop) };
}

async function startTargets(
  world: MeshWorld,
  scratch: string,
  nginx: { binary: string } | null,
  started: ServerHandle[],
): Promise<Running[]> {
  const keep = <T extends ServerHandle>(handle: T): T => {
    started.push(handle);
    return handle;
  };
  const join_ = async (name: string) => ({
    controlPlane: world.controlPlane.url,
    trustDomain: TRUST_DOMAIN,
    joinToken: await world.joinToken(),
    stateDir: join(scratch, name),
  });
  const asGateway = {
    tls: { certPem: world.gateway.chainPem, keyPem: world.gateway.keyPem, caPem: world.bundlePem },
    pathPrefix: '/orders/',
    headers: {},
    grpc: null,
  };
  const asEdge = { certPem: world.edge.chainPem, keyPem: world.edge.keyPem, caPem: world.bundlePem };
  progress('starting the upstream, the embedded guard, the sidecar, the decision service and nginx');
  const upstream = keep(await startMeshServer({ type: 'start', role: 'upstream' }));
  const guard = keep(await startMeshServer({ type: 'start', role: 'guard', ...(await join_('guard')) }));
  const sidecar = keep(
    await startMeshServer({ type: 'start', role: 'sidecar', upstream: upstream.url, ...(await join_('sidecar')) }),
  );
  const authz = keep(
    await startMeshServer({
      type: 'start',
      role: 'authz',
      trustedProxies: [world.edge.spiffeId],
      ...(await join_('authz')),
    }),
  );
  const targets: Running[] = [
    {
      target: 'bare',
      job: { origin: upstream.url, tls: null, pathPrefix: '/orders/', headers: {}, grpc: null },
      serverPids: () => upstream.pids(),
      hopPids: () => null,
    },
    { target: 'guard', job: { origin: guard.url, ...asGateway }, serverPids: () => guard.pids(), hopPids: () => null },
    {
      target: 'sidecar',
      job: { origin: sidecar.url, ...asGateway },
      serverPids: () => [...sidecar.pids(), ...upstream.pids()],
      hopPids: () => sidecar.pids(),
    },
  ];
  if (nginx !== null) {
    // nginx presents orders' SVID, as a sidecar in front of orders would.
    const proxy = keep(
      await startNginx({
        binary: nginx.binary,
        dir: join(scratch, 'nginx'),
        upstreamPort: Number(new URL(upstream.url).port),
        certChainPem: world.ordersProxy.chainPem,
        keyPem: world.ordersProxy.keyPem,
        bundlePem: world.bundlePem,
      }),
    );
    targets.push({
      target: 'nginx',
      job: { origin: proxy.url, ...asGateway },
      serverPids: () => [...proxy.pids(), ...upstream.pids()],
      hopPids: () => proxy.pids(),
    });
  }
  targets.push({
    target: 'authz',
    job: {
      origin: authz.url,
      tls: asEdge,
      pathPrefix: '/envoy/ext_authz/orders/',
      headers: { 'x-forwarded-client-cert': world.xfcc },
      grpc: null,
    },
    serverPids: () => authz.pids(),
    hopPids: () => authz.pids(),
  });
  if (authz.grpcAddress !== null)
    targets.push({
      target: 'authz-grpc',
      job: {
        origin: `https://${authz.grpcAddress}`,
        tls: asEdge,
        pathPrefix: '/orders/',
        headers: {},
        grpc: { serverId: `spiffe://${TRUST_DOMAIN}/svc/${SERVICE}`, certificate: world.forwardedCertificate },
      },
      serverPids: () => authz.pids(),
      hopPids: () => authz.pids(),
    });
  else progress('the decision service serves no gRPC ext_authz (no grpcAddress): no gRPC row');
  return targets;
}

async function main(): Promise<void> {
  const settings = readSettings();
  if (!procAvailable()) throw new Error('bench:mesh reads server CPU from /proc: it runs on Linux only');
  const startedAt = performance.now();
  const loadBefore = loadavg();
  const nginx = nginxBinary();
  const nginxSkipped =
    nginx === null
      ? `nginx is not installed (${NGINX_BINARIES.join(' or ')}; apt-get install nginx-light, as .ci/run does)`
      : null;
  if (nginxSkipped !== null) progress(`(d) nginx row SKIPPED: ${nginxSkipped}`);

  const scratch = mkdtempSync(join(tmpdir(), 'lockstep-bench-mesh-'));
  // Whatever happens from here on, no process and no directory of this run outlives it.
  const leftovers = () => {
    killEverything();
    rmSync(scratch, { recursive: true, force: true });
  };
  process.once('exit', leftovers);
  for (const signal of ['SIGINT', 'SIGTERM'] as const)
    process.once(signal, () => {
      progress(`${signal}: stopping`);
      process.exit(130);
    });

  const servers: ServerHandle[] = [];
  let world: MeshWorld | null = null;
  try {
    progress('control plane (with monitor), policies, enrolment of the gateway and the edge proxy');
    world = await createMeshWorld(scratch);
    const targets = (await startTargets(world, scratch, nginx, servers)).filter(
      (running) => settings.only === null || settings.only.includes(running.target),
    );
    // Joined, policy applied, nothing served yet.
    const idle = Object.fromEntries(targets.map((running) => [running.target, memoryOf(running)])) as RunInfo['idle'];
    const results: SliceResult[] = [];
    for (let round = 1; round <= settings.rounds; round++) {
      // Fresh tokens per round keep them well inside their 5-minute lifetime however long the run.
      const tokens = await world.mintTokens(settings.tokens);
      for (const running of orderOf(targets, round)) {
        const waited = await settle(targets.flatMap((target) => target.serverPids()));
        if (waited > 1) progress(`waited ${waited.toFixed(1)} s for the machine to settle before ${running.target}`);
        results.push(await runSlice(running, round, tokens, settings, round === 1));
      }
    }
    await Promise.all(servers.map((server) => server.close()));
    const markdown = renderMarkdown(results, {
      settings,
      targets: targets.map((running) => running.target),
      nginxSkipped,
      idle,
      nginxVersion: nginx?.version ?? null,
      loadBefore,
      loadAfter: loadavg(),
      seconds: (performance.now() - startedAt) / 1000,
    });
    process.stdout.write(`${markdown}\n`);
    if (settings.quick || settings.only !== null)
      progress('--quick or BENCH_MESH_TARGETS: docs/benchmarks.md left as it was');
    else {
      writeSection(DOCS_FILE, 'mesh', markdown);
      progress(`wrote its section of ${DOCS_FILE}`);
    }
    process.stdout.write(
      `${JSON.stringify(
        summarize(
          results,
          targets.map((running) => running.target),
        ),
      )}\n`,
    );
  } finally {
    await Promise.allSettled(servers.map((server) => server.close()));
    await world?.close();
  }
}

main().catch((error: Error) => {
  console.error(`[bench:mesh] ${error.stack ?? error.message}`);
  process.exitCode = 1;
});
