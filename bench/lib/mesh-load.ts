/**
 * The load generator of bench/mesh.ts (and of bench/guard.ts's one-connection and 1,000-rps phases), a
 * process of its own so that it does not share a server's event loop. It receives one MeshLoadJob over
 * IPC, opens `connections` keep-alive connections (mTLS with the job's client SVID, or plain HTTP for the
 * bare upstream; HTTP/1.1, or gRPC ext_authz Check — see mesh-connections.ts), runs the job's phases in
 * order, and answers one MeshLoadReport. Every request carries the next Txn-Token of the rotation.
 *
 * Open-loop phases send on a schedule kept by a pacer thread (Atomics.wait sleeps to the microsecond;
 * a setTimeout on this thread would send up to a millisecond late, more than the hops being measured)
 * and time each request from its scheduled send time: a server that stalls is charged for the requests
 * queued behind the stall, which a closed loop would never have sent (coordinated omission). How late
 * the generator itself sent is reported beside it.
 */
import { Worker } from 'node:worker_threads';
import { openConnections, type Connection } from './mesh-connections.ts';
import type {
  ClosedPhase,
  MeshLoadJob,
  MeshLoadMessage,
  MeshLoadReport,
  OpenPhase,
  PhaseReport,
} from './mesh-protocol.ts';

/** The pacer: posts i when request i of a schedule is due, -1 after the last. Plain JS: it runs as an eval worker. */
const PACER_SOURCE = `
const { parentPort } = require('node:worker_threads');
const sleeper = new Int32Array(new SharedArrayBuffer(4));
parentPort.on('message', ({ startNs, periodNs, count }) => {
  const start = BigInt(startNs);
  for (let i = 0; i < count; i++) {
    const due = start + BigInt(Math.round(i * periodNs));
    for (;;) {
      const leftNs = Number(due - process.hrtime.bigint());
      if (leftNs <= 0) break;
      Atomics.wait(sleeper, 0, 0, leftNs / 1e6);
    }
    parentPort.postMessage(i);
  }
  parentPort.postMessage(-1);
});
`;

const PATHS = 1000;

/** A growable list of latencies in ms. */
class Samples {
  private values = new Float64Array(4096);
  private size = 0;
  push(value: number): void {
    if (this.size === this.values.length) {
      const grown = new Float64Array(this.values.length * 2);
      grown.set(this.values);
      this.values = grown;
    }
    this.values[this.size++] = value;
  }
  get count(): number {
    return this.size;
  }
  sorted(): Float64Array {
    return this.values.subarray(0, this.size).sort();
  }
}

function percentile(sorted: Float64Array, p: number): number {
  if (sorted.length === 0) return Number.NaN;
  const index = Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1);
  return sorted[Math.max(0, index)] as number;
}

/** A phase's report from its latencies (and, for an open loop, the pacer's send lags), over `measureMs`. */
function phaseReport(name: string, measureMs: number, latencies: Samples, lags: Samples | null): PhaseReport {
  const sorted = latencies.sorted();
  const lagSorted = lags?.sorted() ?? null;
  const seconds = measureMs / 1000;
  return {
    name,
    requests: sorted.length,
    seconds,
    rps: sorted.length / seconds,
    p50Ms: percentile(sorted, 50),
    p99Ms: percentile(sorted, 99),
    maxMs: sorted.length > 0 ? (sorted[sorted.length - 1] as number) : Number.NaN,
    sendLagP50Ms: lagSorted === null ? 0 : percentile(lagSorted, 50),
    sendLagP99Ms: lagSorted === null ? 0 : percentile(lagSorted, 99),
  };
}

const nowNs = () => process.hrtime.bigint();
const toMs = (ns: bigint) => Number(ns) / 1e6;
const send = (message: MeshLoadMessage) => process.send?.(message);

async function run(job: MeshLoadJob): Promise<MeshLoadReport> {
  if (job.tokens.length === 0) throw new TypeError('no Txn-Tokens to send');
  const clients = await openConnections(job);
  let sent = 0;
  let answered = 0;
  let non200 = 0;
  let errors = 0;
  let firstProblem: string | null = null;
  const statuses: Record<string, number> = {};

  /** One request on `connection`, the next path and token of the rotation; resolves when answered. */
  async function get(connection: Connection): Promise<void> {
    const index = sent++;
    const headers = { ...job.headers, 'txn-token': job.tokens[index % job.tokens.length] as string };
    const outcome = await connection.send(`${job.pathPrefix}${index % PATHS}`, headers);
    answered++;
    if (outcome instanceof Error) {
      errors++;
      firstProblem ??= `transport error: ${outcome.message}`;
      return;
    }
    statuses[outcome.status] = (statuses[outcome.status] ?? 0) + 1;
    if (outcome.status !== 200) {
      non200++;
      firstProblem ??= `HTTP ${outcome.status}: ${outcome.body}`;
    }
  }

  async function closed(phase: ClosedPhase): Promise<PhaseReport> {
    const startNs = nowNs();
    const warmupEarliest = startNs + BigInt(phase.warmupMs) * 1_000_000n;
    const warmupLatest = startNs + BigInt(phase.maxWarmupMs) * 1_000_000n;
    const answeredBefore = answered;
    let measureStart: bigint | null = null;
    let measureEnd: bigint | null = null;
    const latencies = new Samples();
    const openWindowIfDue = (now: bigint) => {
      if (measureStart !== null) return;
      if ((now >= warmupEarliest && answered - answeredBefore >= phase.warmupRequests) || now >= warmupLatest) {
        measureStart = now;
        measureEnd = now + BigInt(phase.measureMs) * 1_000_000n;
        send({ type: 'mark', phase: phase.name, edge: 'start', answered });
      }
    };
    await Promise.all(
      clients.slice(0, phase.loops ?? clients.length).map(async (client) => {
        for (;;) {
          const started = nowNs();
          if (measureEnd !== null && started >= measureEnd) return;
          const failuresBefore = errors;
          await get(client);
          const finished = nowNs();
          openWindowIfDue(finished);
          if (measureStart !== null && started >= measureStart) latencies.push(toMs(finished - started));
          // Do not spin on a dead server.
          if (errors > failuresBefore) await new Promise((resolve) => setTimeout(resolve, 10));
        }
      }),
    );
    send({ type: 'mark', phase: phase.name, edge: 'end', answered });
    return phaseReport(phase.name, phase.measureMs, latencies, null);
  }

  const pacer = new Worker(PACER_SOURCE, { eval: true });
  async function open(phase: OpenPhase): Promise<PhaseReport> {
    const periodNs = 1e9 / phase.rate;
    const warmCount = Math.ceil((phase.warmupMs / 1000) * phase.rate);
    const measureCount = Math.round((phase.measureMs / 1000) * phase.rate);
    const count = warmCount + measureCount;
    const startNs = nowNs() + 20_000_000n;
    const latencies = new Samples();
    const lags = new Samples();
    let outstanding = 0;
    let allSent = false;
    return new Promise((resolve) => {
      const done = () => {
        pacer.off('message', onDue);
        send({ type: 'mark', phase: phase.name, edge: 'end', answered });
        resolve(phaseReport(phase.name, phase.measureMs, latencies, lags));
      };
      const onDue = (index: number) => {
        if (index === -1) {
          allSent = true;
          if (outstanding === 0) done();
          return;
        }
        const scheduled = startNs + BigInt(Math.round(index * periodNs));
        if (index === warmCount) send({ type: 'mark', phase: phase.name, edge: 'start', answered });
        const measured = index >= warmCount;
        if (measured) lags.push(toMs(nowNs() - scheduled));
        outstanding++;
        void get(clients[index % clients.length] as Connection).then(() => {
          if (measured) latencies.push(toMs(nowNs() - scheduled));
          outstanding--;
          if (allSent && outstanding === 0) done();
        });
      };
      pacer.on('message', onDue);
      pacer.postMessage({ startNs: String(startNs), periodNs, count });
    });
  }

  const reports: PhaseReport[] = [];
  try {
    for (const phase of job.phases) reports.push(phase.kind === 'open' ? await open(phase) : await closed(phase));
  } finally {
    await pacer.terminate();
    await Promise.all(clients.map((client) => client.close()));
  }
  return { phases: reports, non200, errors, statuses, firstProblem };
}

if (typeof process.send !== 'function') {
  console.error(
    'bench/lib/mesh-load.ts is the load generator of bench/mesh.ts and bench/guard.ts; run `npm run bench:mesh` or `npm run bench:guard` instead.',
  );
  process.exit(2);
}

// Bounded even if the parent never answers, and gone with it.
const watchdog = setTimeout(() => {
  console.error('mesh load generator: no job within 30 s; exiting');
  process.exit(3);
}, 30_000);
process.on('disconnect', () => process.exit(0));

process.once('message', (job: MeshLoadJob) => {
  clearTimeout(watchdog);
  run(job).then(
    (report) => process.send?.({ type: 'report', report } satisfies MeshLoadMessage, () => process.disconnect()),
    (error: Error) =>
      process.send?.({ type: 'failed', message: error.stack ?? error.message } satisfies MeshLoadMessage, () =>
        process.disconnect(),
      ),
  );
});
