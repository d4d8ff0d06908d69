/**
 * The audit path off the request path: what the writer assembles from the ring (on the request
 * thread's spare turns, or on a thread of its own) is, line for line, `JSON.stringify` of the event
 * the channel's subscribers get for the same admission — for
 * random admissions with hostile strings, probes, dry runs and trace ids, through a ring small enough
 * to wrap, with contexts too large for it; nothing is lost or reordered when the ring is full; the
 * waiting list is bounded and its drops are counted; and a process that exits without closing its
 * guard still has every decision in its file.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { closeSync, mkdtempSync, openSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, describe, it } from 'node:test';
import { setTimeout as delay } from 'node:timers/promises';
import { createAuditFileSink } from './audit-file-sink.ts';
import type { Admission } from './pipeline.ts';
import { nextRequestSeq, requestIdOf } from './request-id.ts';
import { routeSecurity, type RouteSecurity } from './routes.ts';
import { decisionEventOf, decisionTap, type DecisionEvent, type DecisionRecorder } from './steps/audit.ts';
import { traceIdOf } from './trace-context.ts';

const dir = mkdtempSync(join(tmpdir(), 'lockstep-ring-'));
after(() => rmSync(dir, { recursive: true, force: true }));
let files = 0;
const nextFile = () => join(dir, `audit-${++files}.jsonl`);

/** A small deterministic generator, so that a failure can be replayed from its seed. */
function random(seed: number): () => number {
  let state = seed >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const HOSTILE = ['a"b', 'c\\d', 'e\u0000f', 'g\u001fh', 'i\u2028j', 'k\ud800l', 'm😀n', 'ü', '</script>', ''];

function admissions(seed: number, count: number, routeLength = 12): Admission[] {
  const next = random(seed);
  const pick = <T>(items: readonly T[]): T => items[Math.floor(next() * items.length)] as T;
  const text = () => (next() < 0.3 ? pick(HOSTILE) + pick(HOSTILE) : `t${Math.floor(next() * 5)}`);
  // Built by hand: the writer must carry any string whole, even ones routeSecurity would refuse.
  const hostileRoute: RouteSecurity = {
    ...routeSecurity('POST', '/x', { action: 'act' }, 'POST /x'),
    template: `/${'x'.repeat(routeLength)}${pick(HOSTILE)}`,
    action: `act-${pick(HOSTILE)}`,
  };
  const routes = [
    routeSecurity('GET', '/orders/:id', { action: 'orders:read' }, 'GET /orders/:id'),
    hostileRoute,
    null,
  ];
  const txns = Array.from({ length: 6 }, () => ({ claims: { sub: text(), txn: text() } }));
  const result: Admission[] = [];
  for (let i = 0; i < count; i++) {
    const probe = next() < 0.1;
    const seq = nextRequestSeq();
    const traced = next() < 0.5;
    const allowed = next() < 0.7;
    result.push({
      requestId: requestIdOf(seq),
      requestSeq: seq,
      method: pick(['GET', 'POST', 'DELETE', text()]),
      route: pick(routes),
      peer:
        next() < 0.9
          ? { spiffeId: `spiffe://shop.test/svc/${text()}`, service: 's', notAfterMs: 0, scanner: probe }
          : null,
      txn: (next() < 0.8 ? pick(txns) : null) as Admission['txn'],
      traceparent: traced
        ? `00-${Math.floor(next() * 2 ** 48)
            .toString(16)
            .padStart(32, 'a')}-00f067aa0ba902b7-01`
        : next() < 0.5
          ? 'not a traceparent'
          : null,
      allowed,
      refusal: null,
      dryRun: next() < 0.1,
      reason: allowed ? 'LOCKSTEP_ALLOW' : pick(['LOCKSTEP_ERR_DENIED', 'LOCKSTEP_ERR_TXN_TOKEN_INVALID']),
      policyIds: next() < 0.5 ? [] : [text(), 'p2'],
      policyVersion: next() < 0.2 ? null : `v${Math.floor(next() * 3)}`,
      latencyMs: next() < 0.05 ? Number.NaN : next() * 3,
      probe,
      probeAs: probe && next() < 0.5 ? 'spiffe://shop.test/svc/gateway' : null,
      probeRequester: probe && next() < 0.5 ? 'spiffe://shop.test/svc/web' : null,
      prober: probe || next() < 0.05 ? 'spiffe://shop.test/scanner/ci' : null,
    });
  }
  return result;
}

/** The one recorder a sink of `service` added. */
function recorderOf(service: string): DecisionRecorder {
  const { recorders } = decisionTap(service);
  assert.equal(recorders.length, 1);
  return recorders[0] as DecisionRecorder;
}

/** The event a channel subscriber gets for `admission` — the plain encoding's input. */
function expected(service: string, via: string | undefined, admission: Admission, timeMs: number): DecisionEvent {
  const event = decisionEventOf(
    service,
    via,
    admission,
    new Date(timeMs).toISOString(),
    traceIdOf(admission.traceparent ?? undefined),
  );
  // The file writes a latency that is not a finite number as 0 (JSON.stringify would write null).
  return Number.isFinite(event.latencyMs) ? event : { ...event, latencyMs: 0 };
}

function lines(path: string): string[] {
  const text = readFileSync(path, 'utf8');
  assert.ok(text.endsWith('\n'), 'the file ends with a whole line');
  return text.slice(0, -1).split('\n');
}

describe('the audit ring and its writer thread', () => {
  for (const [seed, ringBytes, routeLength, thread] of [
    [1, 1 << 20, 12, 'inline'],
    [2, 4096, 12, 'worker'],
    [3, 4096, 3000, 'inline'],
    [4, 1 << 16, 40, 'worker'],
    [5, 4096, 3000, 'worker'],
  ] as const) {
    it(`writes JSON.stringify of each event, in order (seed ${seed}, ring ${ringBytes} B, routes of ${routeLength}, ${thread})`, async () => {
      const service = `svc-${seed}`;
      const path = nextFile();
      const sink = createAuditFileSink(path, { service, ringBytes, flushMs: 5, thread });
      const recorder = recorderOf(service);
      const batch = admissions(seed, 3000, routeLength);
      const want: string[] = [];
      try {
        let timeMs = Date.UTC(2026, 11, 7);
        for (const [index, admission] of batch.entries()) {
          timeMs += index % 7 === 0 ? 1 : 0;
          const via = index % 11 === 0 ? 'authz-server' : undefined;
          recorder.recordAdmission(service, via, admission, timeMs);
          want.push(JSON.stringify(expected(service, via, admission, timeMs)));
          // Now and then the writer catches up, so that the ring wraps while it is read.
          if (index % 500 === 0) await sink.flush();
        }
        await sink.flush();
      } finally {
        await sink.close();
      }
      const got = lines(path);
      assert.equal(got.length, want.length);
      for (let i = 0; i < want.length; i++) assert.equal(got[i], want[i], `line ${i + 1}`);
      assert.equal(sink.dropped, 0);
    });
  }

  it('keeps the order of events recorded outside a pipeline among a pipeline’s', async () => {
    const path = nextFile();
    const sink = createAuditFileSink(path, { service: 'mixed', ringBytes: 4096 });
    const recorder = recorderOf('mixed');
    const [first, second] = admissions(7, 2);
    const outside: DecisionEvent = { ...expected('mixed', undefined, first as Admission, 0), requestId: 'sign-in-1' };
    try {
      recorder.recordAdmission('mixed', undefined, first as Admission, 0);
      recorder.recordEvent(outside);
      recorder.recordAdmission('mixed', undefined, second as Admission, 0);
    } finally {
      await sink.close();
    }
    const ids = lines(path).map((line) => (JSON.parse(line) as DecisionEvent).requestId);
    assert.deepEqual(ids, [(first as Admission).requestId, 'sign-in-1', (second as Admission).requestId]);
  });

  it('lets events wait, in order, while the ring is full; beyond the waiting list drops and counts them', async () => {
    const path = nextFile();
    const errors: string[] = [];
    // Written on this thread: nothing is taken out of the ring until this test yields.
    const sink = createAuditFileSink(path, {
      service: 'full',
      ringBytes: 4096,
      thread: 'inline',
      waitingLimit: 200,
      onError: (error) => errors.push(error.message),
    });
    const recorder = recorderOf('full');
    const batch = admissions(8, 400).map((admission) => ({ ...admission, traceparent: null }));
    for (const admission of batch) recorder.recordAdmission('full', undefined, admission, 0);
    await sink.close();
    const written = lines(path).map((line) => (JSON.parse(line) as DecisionEvent).requestId);
    // 4 KiB hold a few dozen events and their contexts; 200 more records waited; the rest were dropped.
    assert.ok(written.length > 50 && written.length < 400, `${written.length} written`);
    assert.deepEqual(
      written,
      batch.slice(0, written.length).map((admission) => admission.requestId),
      'the first ones, in order',
    );
    assert.equal(sink.dropped, 400 - written.length);
    assert.match(errors.join('\n'), /decision events dropped: the audit writer for .* could not keep up/);
  });

  it('tells a probe from a scanner request refused before it was decided, in the same context', async () => {
    const path = nextFile();
    const sink = createAuditFileSink(path, { service: 'probes' });
    const recorder = recorderOf('probes');
    const [base] = admissions(11, 1);
    const scanner = 'spiffe://shop.test/scanner/ci';
    const probe: Admission = {
      ...(base as Admission),
      probe: true,
      prober: scanner,
      probeAs: null,
      probeRequester: null,
    };
    const early: Admission = {
      ...probe,
      probe: false,
      requestSeq: probe.requestSeq + 1,
      requestId: requestIdOf(probe.requestSeq + 1),
    };
    try {
      recorder.recordAdmission('probes', undefined, probe, 0);
      recorder.recordAdmission('probes', undefined, early, 0);
    } finally {
      await sink.close();
    }
    assert.deepEqual(lines(path), [
      JSON.stringify(expected('probes', undefined, probe, 0)),
      JSON.stringify(expected('probes', undefined, early, 0)),
    ]);
  });

  it('bounds the waiting list in records of every kind: new contexts count too', async () => {
    const path = nextFile();
    const sink = createAuditFileSink(path, { service: 'contexts', ringBytes: 4096, waitingLimit: 50 });
    const recorder = recorderOf('contexts');
    // Every decision a new transaction: a new context (hundreds of bytes) before each event.
    const batch = admissions(12, 500).map((admission, index) => ({
      ...admission,
      txn: { claims: { sub: `u${index}`, txn: `t${index}` } } as Admission['txn'],
    }));
    for (const admission of batch) recorder.recordAdmission('contexts', undefined, admission, 0);
    await sink.close();
    const written = lines(path).map((line) => (JSON.parse(line) as DecisionEvent).requestId);
    assert.ok(written.length < 100, `${written.length} written: the ring and 50 waiting records hold few`);
    assert.equal(sink.dropped, 500 - written.length, 'every event not written is counted');
    assert.deepEqual(
      written,
      batch.slice(0, written.length).map((admission) => admission.requestId),
    );
  });

  it('answers a flush that waits while close() runs', async () => {
    const path = nextFile();
    const sink = createAuditFileSink(path, { service: 'closing', ringBytes: 4096 });
    const recorder = recorderOf('closing');
    for (const admission of admissions(13, 100)) recorder.recordAdmission('closing', undefined, admission, 0);
    const flushed = sink.flush();
    await sink.close();
    const late = await Promise.race([flushed.then(() => 'flushed'), delay(1_000).then(() => 'hangs')]);
    assert.equal(late, 'flushed');
    assert.equal(lines(path).length, 100);
  });

  it('stops for good when a journal segment cannot be opened: no line goes to another file, drops are counted', async () => {
    const journal = join(dir, `journal-${++files}`);
    const errors: string[] = [];
    const sink = createAuditFileSink(journal, {
      service: 'rotation',
      segments: { bytes: 2_000, count: 8 },
      onError: (error) => errors.push(error.message),
    });
    const recorder = recorderOf('rotation');
    const batch = admissions(14, 40);
    for (const admission of batch.slice(0, 10)) recorder.recordAdmission('rotation', undefined, admission, 0);
    await sink.flush();
    // The directory goes away under the writer: the next segment cannot be opened.
    rmSync(journal, { recursive: true, force: true });
    for (const admission of batch.slice(10, 30)) recorder.recordAdmission('rotation', undefined, admission, 0);
    await sink.flush();
    assert.match(
      errors.join('\n'),
      /the audit writer stopped \(ENOENT.*counted as dropped until the guard is restarted/,
    );
    // A file opened now may get the descriptor the writer had: nothing of the audit reaches it.
    const other = nextFile();
    writeFileSync(other, 'mine\n');
    const fd = openSync(other, 'a');
    try {
      const before = sink.dropped;
      for (const admission of batch.slice(30)) recorder.recordAdmission('rotation', undefined, admission, 0);
      await sink.flush();
      assert.equal(sink.dropped, before + 10, 'each later decision counted as dropped');
    } finally {
      closeSync(fd);
      await sink.close();
    }
    assert.equal(readFileSync(other, 'utf8'), 'mine\n');
  });

  for (const thread of ['inline', 'worker'] as const) {
    it(`writes every decision of a process that exits without closing its guard (${thread})`, () => {
      const path = nextFile();
      const script = fileURLToPath(new URL('../test/fixtures/exit-without-close.ts', import.meta.url));
      const child = spawnSync(process.execPath, [script, path, '5000', thread], { encoding: 'utf8', timeout: 30_000 });
      assert.equal(child.status, 0, child.stderr);
      const got = lines(path).map((line) => JSON.parse(line) as DecisionEvent);
      assert.equal(got.length, 5000);
      assert.deepEqual(
        got.map((event) => event.requestId),
        JSON.parse(child.stdout) as string[],
      );
    });
  }
});
