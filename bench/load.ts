/**
 * The load generator, run as a child process by bench/guard.ts so that it does not share the
 * server's event loop. It receives one LoadJob over IPC, drives `connections` keep-alive mTLS
 * connections (pipelining 1, each a closed loop of one request at a time), warms up, measures, sends
 * back one LoadReport and exits. Every request carries the next Txn-Token of the rotation.
 */
import { Pool } from 'undici';
import { dispatchGet, type Outcome } from './lib/dispatch-get.ts';
import type { LoadJob, LoadMessage, LoadReport } from './lib/protocol.ts';

function send(message: LoadMessage): void {
  process.send?.(message, () => process.disconnect());
}

/** One GET with the next token; a server that stops answering fails the request instead of stalling the run. */
function get(pool: Pool, origin: string, path: string, token: string): Promise<Outcome> {
  return dispatchGet(pool, {
    origin,
    path,
    headers: { 'txn-token': token },
    headersTimeout: 10_000,
    bodyTimeout: 10_000,
  });
}

function percentile(sorted: Float64Array, p: number): number {
  if (sorted.length === 0) return Number.NaN;
  const index = Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1);
  return sorted[Math.max(0, index)] as number;
}

async function run(job: LoadJob): Promise<LoadReport> {
  const origin = new URL(job.origin);
  if (origin.hostname !== '127.0.0.1' || origin.protocol !== 'https:')
    throw new TypeError(`load generator only talks to https://127.0.0.1, not ${job.origin}`);
  if (job.tokens.length === 0) throw new TypeError('no Txn-Tokens to send');

  const pool = new Pool(job.origin, {
    connections: job.connections,
    pipelining: 1,
    keepAliveTimeout: 60_000,
    connect: {
      cert: job.certPem,
      key: job.keyPem,
      ca: job.caPem,
      rejectUnauthorized: true,
      checkServerIdentity: () => undefined,
    },
  });

  // Warm-up lasts warmupMs AND warmupRequests answers (the bench asks for one full rotation of the
  // tokens, so that the window measures the steady state, every token cached) — capped at maxWarmupMs.
  const startNs = process.hrtime.bigint();
  const warmupEarliestNs = startNs + BigInt(job.warmupMs) * 1_000_000n;
  const warmupLatestNs = startNs + BigInt(job.maxWarmupMs) * 1_000_000n;
  let measureStartNs: bigint | null = null;
  let measureEndNs: bigint | null = null;
  let completed = 0;
  let latencies = new Float64Array(Math.max(1024, Math.ceil(job.measureMs * 100)));
  let recorded = 0;
  let next = 0;
  let non200 = 0;
  let errors = 0;
  let firstProblem: string | null = null;
  const statuses: Record<string, number> = {};

  function endWarmupIfDue(now: bigint): void {
    if (
      measureStartNs === null &&
      ((now >= warmupEarliestNs && completed >= job.warmupRequests) || now >= warmupLatestNs)
    ) {
      measureStartNs = now;
      measureEndNs = now + BigInt(job.measureMs) * 1_000_000n;
      // The bench samples the server's CPU at both ends of the measured window.
      process.send?.({ type: 'mark', phase: 'start' } satisfies LoadMessage);
    }
  }

  async function connectionLoop(): Promise<void> {
    for (;;) {
      const started = process.hrtime.bigint();
      if (measureEndNs !== null && started >= measureEndNs) return;
      const token = job.tokens[next++ % job.tokens.length] as string;
      try {
        const { status, body } = await get(pool, job.origin, job.path, token);
        const finished = process.hrtime.bigint();
        completed++;
        endWarmupIfDue(finished);
        statuses[status] = (statuses[status] ?? 0) + 1;
        if (status !== 200) {
          non200++;
          firstProblem ??= `HTTP ${status}: ${body}`;
        }
        if (measureStartNs !== null && started >= measureStartNs) {
          if (recorded === latencies.length) {
            const grown = new Float64Array(latencies.length * 2);
            grown.set(latencies);
            latencies = grown;
          }
          latencies[recorded++] = Number(finished - started) / 1e6;
        }
      } catch (error) {
        errors++;
        firstProblem ??= `transport error: ${(error as Error).message}`;
        endWarmupIfDue(process.hrtime.bigint());
        // Do not spin on a dead server.
        await new Promise((resolve) => setTimeout(resolve, 10));
      }
    }
  }

  await Promise.all(Array.from({ length: job.connections }, connectionLoop));
  process.send?.({ type: 'mark', phase: 'end' } satisfies LoadMessage);
  await pool.close();

  const sorted = latencies.subarray(0, recorded).sort();
  const seconds = job.measureMs / 1000;
  return {
    warmupSeconds: measureStartNs === null ? Number.NaN : Number(measureStartNs - startNs) / 1e9,
    requests: recorded,
    seconds,
    rps: recorded / seconds,
    p50Ms: percentile(sorted, 50),
    p99Ms: percentile(sorted, 99),
    maxMs: recorded > 0 ? (sorted[recorded - 1] as number) : Number.NaN,
    non200,
    errors,
    statuses,
    firstProblem,
  };
}

if (typeof process.send !== 'function') {
  console.error('bench/load.ts is the load generator of bench/guard.ts; run `npm run bench:guard` instead.');
  process.exit(2);
}

// Bounded even if the parent never answers.
const watchdog = setTimeout(() => {
  console.error('load generator: no job within 30 s; exiting');
  process.exit(3);
}, 30_000);

process.once('message', (job: LoadJob) => {
  clearTimeout(watchdog);
  run(job).then(
    (report) => send({ type: 'report', report }),
    (error: Error) => send({ type: 'failed', message: error.stack ?? error.message }),
  );
});
