/**
 * What the audit costs, in process: recording a decision into the ring (the request thread's share),
 * with the writer on the request thread and on a worker thread, and the writer's share (encoding and
 * writing a line). 1,000 transactions in rotation, as in the load, with a shop-like context and a
 * trace id; the first rounds warm up.
 */
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { createAuditFileSink } from '../../packages/guard/src/audit-file-sink.ts';
import type { Admission } from '../../packages/guard/src/pipeline.ts';
import { nextRequestSeq, requestIdOf } from '../../packages/guard/src/request-id.ts';
import { routeSecurity } from '../../packages/guard/src/routes.ts';
import { decisionTap, type DecisionRecorder } from '../../packages/guard/src/steps/audit.ts';
import { ROUTE_PATH } from './servers.ts';

export interface AuditCostReport {
  /** µs per decision on the request thread, writer inline / on a worker thread. */
  readonly recordInlineUs: number;
  readonly recordThreadUs: number;
  /** µs per event on the writer's side (encode and write), batches of 5,000. */
  readonly writeUs: number;
}

const SERVICE = 'audit-cost';
const BATCH = 5_000;

function admissions(): Admission[] {
  const route = routeSecurity('GET', ROUTE_PATH, { action: 'orders:read' }, 'bench');
  const peer = { spiffeId: 'spiffe://shop.test/svc/gateway', service: 'gateway', notAfterMs: 0, scanner: false };
  const policyIds = Object.freeze(['orders-read-own']);
  const tokens = Array.from({ length: 1_000 }, (_, i) => ({
    claims: { sub: `customer-${i}@example.com`, txn: crypto.randomUUID() },
  }));
  return Array.from({ length: BATCH }, (_, i) => {
    const seq = nextRequestSeq();
    return {
      requestId: requestIdOf(seq),
      requestSeq: seq,
      method: 'GET',
      route,
      peer,
      txn: tokens[i % tokens.length],
      traceparent: '00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01',
      allowed: true,
      refusal: null,
      dryRun: false,
      reason: 'LOCKSTEP_ALLOW',
      policyIds,
      policyVersion: 'v1-2a9f',
      latencyMs: 0.0031,
      probe: false,
      probeAs: null,
      probeRequester: null,
      prober: null,
    } as unknown as Admission;
  });
}

async function measure(scratch: string, thread: 'inline' | 'worker'): Promise<{ recordUs: number; writeUs: number }> {
  const sink = createAuditFileSink(join(scratch, `audit-cost-${thread}.jsonl`), { service: SERVICE, thread });
  const recorder = decisionTap(SERVICE).recorders[0] as DecisionRecorder;
  const batch = admissions();
  let recording = 0;
  let writing = 0;
  let rounds = 0;
  try {
    for (let round = 0; round < 40; round++) {
      const started = performance.now();
      for (const admission of batch) recorder.recordAdmission(SERVICE, undefined, admission, Date.now());
      const recorded = performance.now();
      await sink.flush();
      if (round < 10) continue;
      recording += recorded - started;
      writing += performance.now() - recorded;
      rounds += 1;
    }
  } finally {
    await sink.close();
  }
  const perEvent = (ms: number) => (ms * 1000) / (rounds * BATCH);
  return { recordUs: perEvent(recording), writeUs: perEvent(writing) };
}

export async function measureAuditCost(scratch: string): Promise<AuditCostReport> {
  const inline = await measure(scratch, 'inline');
  const thread = await measure(scratch, 'worker');
  return { recordInlineUs: inline.recordUs, recordThreadUs: thread.recordUs, writeUs: inline.writeUs };
}
