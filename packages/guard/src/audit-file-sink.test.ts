import assert from 'node:assert/strict';
import fs, {
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  statSync,
  writeFileSync,
} from 'node:fs';
import { syncBuiltinESMExports } from 'node:module';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { createAuditFileSink, journalSegments } from './audit-file-sink.ts';
import { auditEnabled, decisionToJson, publishDecision, type DecisionEvent } from './steps/audit.ts';

const dir = mkdtempSync(join(tmpdir(), 'lockstep-audit-'));
after(() => rmSync(dir, { recursive: true, force: true }));

let files = 0;
function nextFile(): string {
  files++;
  return join(dir, `nested-${files}`, 'audit.jsonl');
}

function decisionEvent(requestId: string, decision: 'allow' | 'deny' = 'allow'): DecisionEvent {
  return {
    time: new Date().toISOString(),
    service: 'orders',
    requestId,
    caller: 'spiffe://shop.test/svc/gateway',
    sub: 'alice',
    txn: 'txn-1',
    method: 'POST',
    route: '/orders',
    action: 'orders:create',
    resource: 'Lockstep::Service::"orders"',
    decision,
    policyIds: decision === 'deny' ? ['forbid-suspended'] : [],
    policyVersion: 'v7',
    reason: decision === 'deny' ? 'LOCKSTEP_ERR_DENIED' : 'LOCKSTEP_ALLOW',
    dryRun: false,
    latencyMs: 0.25,
    traceId: null,
  };
}

/** The events in the log; none while the sink has not even created the file yet. */
function readLines(path: string): unknown[] {
  if (!existsSync(path)) return [];
  const text = readFileSync(path, 'utf8');
  assert.ok(text === '' || text.endsWith('\n'), 'every line is complete');
  return text
    .split('\n')
    .filter((line) => line !== '')
    .map((line) => JSON.parse(line) as unknown);
}

/**
 * Makes the disk full for the writer's appends (`fs.writevSync`, which it imports by name; the sink
 * runs its writer on this thread for it): the kernel takes the first `room` bytes, then every write
 * fails with ENOSPC, until the returned function gives the disk its room back.
 */
function fillDisk(room: number): () => void {
  const real = fs.writevSync;
  let left = room;
  const full = (fd: number, buffers: readonly NodeJS.ArrayBufferView[], position?: number | null): number => {
    if (left === 0) throw Object.assign(new Error('ENOSPC: no space left on device, write'), { code: 'ENOSPC' });
    const bytes = Buffer.concat(buffers.map((view) => Buffer.from(view.buffer, view.byteOffset, view.byteLength)));
    const written = fs.writeSync(fd, bytes, 0, Math.min(left, bytes.length), position);
    left -= written;
    return written;
  };
  fs.writevSync = full as typeof fs.writevSync;
  syncBuiltinESMExports();
  return () => {
    fs.writevSync = real;
    syncBuiltinESMExports();
  };
}

describe('createAuditFileSink', () => {
  it('writes exactly one JSON line per event after flush, to a file only its owner can read', async () => {
    const path = nextFile();
    const sink = createAuditFileSink(path, { flushMs: 60_000 });
    try {
      const events = [decisionEvent('r-1'), decisionEvent('r-2', 'deny'), decisionEvent('r-3')];
      for (const event of events) publishDecision(event);
      await sink.flush();
      assert.deepEqual(readLines(path), events);
      assert.equal(statSync(path).mode & 0o777, 0o600);

      await sink.flush();
      assert.equal(readLines(path).length, 3, 'a second flush writes nothing again');
    } finally {
      await sink.close();
    }
  });

  it('close() writes what is still buffered and unsubscribes', async () => {
    const path = nextFile();
    const sink = createAuditFileSink(path, { flushMs: 60_000 });
    assert.equal(auditEnabled(), true);
    publishDecision(decisionEvent('r-1'));
    publishDecision(decisionEvent('r-2'));
    await sink.close();
    assert.deepEqual(
      readLines(path).map((event) => (event as DecisionEvent).requestId),
      ['r-1', 'r-2'],
    );
    assert.equal(auditEnabled(), false);
    publishDecision(decisionEvent('r-3'));
    await new Promise((resolve) => setTimeout(resolve, 20));
    assert.equal(readLines(path).length, 2, 'no event is written after close');
  });

  it('appends to an existing log instead of truncating it', async () => {
    const path = nextFile();
    const first = createAuditFileSink(path);
    publishDecision(decisionEvent('r-1'));
    await first.close();
    const second = createAuditFileSink(path);
    publishDecision(decisionEvent('r-2'));
    await second.close();
    assert.deepEqual(
      readLines(path).map((event) => (event as DecisionEvent).requestId),
      ['r-1', 'r-2'],
    );
  });

  it('writes on its own timer without flush()', async () => {
    const path = nextFile();
    const sink = createAuditFileSink(path, { flushMs: 10 });
    try {
      publishDecision(decisionEvent('r-1'));
      for (let waited = 0; waited < 2000; waited += 10) {
        await new Promise((resolve) => setTimeout(resolve, 10));
        if (readLines(path).length > 0) break;
      }
      assert.equal(readLines(path).length, 1);
    } finally {
      await sink.close();
    }
  });

  it('flush() also waits for chunks that filled up and started writing on their own', async () => {
    const path = nextFile();
    const sink = createAuditFileSink(path, { flushMs: 60_000 });
    try {
      // 512 events fill more than one 64 KiB chunk; flush() must resolve only once all are on disk.
      for (let i = 0; i < 512; i++) publishDecision(decisionEvent(`r-${i}`));
      await sink.flush();
      const lines = readLines(path);
      assert.equal(lines.length, 512);
      assert.deepEqual(
        lines.map((line) => (line as { requestId: string }).requestId),
        Array.from({ length: 512 }, (_, i) => `r-${i}`),
      );
    } finally {
      await sink.close();
    }
  });

  it('writes a line longer than a chunk whole, between its neighbours', async () => {
    const path = nextFile();
    const sink = createAuditFileSink(path, { flushMs: 60_000 });
    try {
      const huge = { ...decisionEvent('r-huge'), policyIds: ['p'.repeat(100_000), 'é'.repeat(30_000)] };
      publishDecision(decisionEvent('r-before'));
      publishDecision(huge);
      publishDecision(decisionEvent('r-after'));
      await sink.flush();
      const lines = readLines(path);
      assert.deepEqual(
        lines.map((line) => (line as { requestId: string }).requestId),
        ['r-before', 'r-huge', 'r-after'],
      );
      assert.deepEqual(lines[1], huge);
    } finally {
      await sink.close();
    }
  });

  it('ends a line torn by a crash before appending, so that the next line stays whole', async () => {
    const path = nextFile();
    mkdirSync(join(path, '..'), { recursive: true });
    writeFileSync(
      path,
      `${decisionToJson(decisionEvent('r-1'))}\n${decisionToJson(decisionEvent('r-torn')).slice(0, 30)}`,
    );
    const sink = createAuditFileSink(path, { flushMs: 60_000 });
    publishDecision(decisionEvent('r-2'));
    await sink.close();
    const lines = readFileSync(path, 'utf8').split('\n');
    assert.equal(lines.length, 4);
    assert.equal((JSON.parse(lines[2] ?? '') as DecisionEvent).requestId, 'r-2');
  });

  it('counts the events of a failed write as dropped; ends the line it cut short before the next write', async () => {
    const path = nextFile();
    const errors: string[] = [];
    const sink = createAuditFileSink(path, {
      flushMs: 60_000,
      thread: 'inline',
      onError: (error) => errors.push(error.message),
    });
    const events = new Map([1, 2, 3, 4, 5, 6, 7].map((n) => [`r-${n}`, decisionEvent(`r-${n}`)]));
    const publish = (...ids: string[]) => ids.forEach((id) => publishDecision(events.get(id) as DecisionEvent));
    const text = (id: string) => decisionToJson(events.get(id) as DecisionEvent);
    let freeDisk = (): void => undefined;
    try {
      publish('r-1');
      await sink.flush();
      // The disk fills up in the middle of r-3: r-2 is whole, r-3 is cut short, r-4 does not get in.
      freeDisk = fillDisk(Buffer.byteLength(`${text('r-2')}\n`) + 20);
      publish('r-2', 'r-3', 'r-4');
      await sink.flush();
      assert.equal(sink.dropped, 1, 'r-4 is not in the file (r-3 is, cut short: its reader counts it)');
      const expected = /ENOSPC.*: 1 of 3 events are not in .*audit\.jsonl \(counted as dropped\); one is there cut/;
      assert.match(errors.join('\n'), expected);
      // Nothing gets in any more: every event of the chunk is counted.
      publish('r-5', 'r-6');
      await sink.flush();
      assert.equal(sink.dropped, 3);
      freeDisk();
      publish('r-7');
      await sink.flush();
    } finally {
      freeDisk();
      await sink.close();
    }
    const lines = readFileSync(path, 'utf8').split('\n');
    assert.deepEqual(
      lines,
      [text('r-1'), text('r-2'), text('r-3').slice(0, 20), text('r-7'), ''],
      'the torn line ends before r-7, which is whole',
    );
    assert.equal(sink.dropped, 3);
  });

  it('writes a journal in segments, and drops and counts events while all segments are unshipped', async () => {
    const journal = join(dir, 'journal');
    const line = Buffer.byteLength(decisionToJson(decisionEvent('r-0'))) + 1;
    // Two lines fill a segment; four segments at most.
    const sink = createAuditFileSink(journal, { flushMs: 60_000, segments: { bytes: 2 * line, count: 4 } });
    try {
      for (let i = 0; i < 10; i++) publishDecision(decisionEvent(`r-${i}`));
      await sink.flush();
      assert.deepEqual(journalSegments(journal), [1, 2, 3, 4]);
      assert.equal(sink.dropped, 2);
      const ids = (segment: number) =>
        readLines(join(journal, `journal-${segment}.jsonl`)).map((event) => (event as DecisionEvent).requestId);
      assert.deepEqual([1, 2, 3, 4].map(ids), [
        ['r-0', 'r-1'],
        ['r-2', 'r-3'],
        ['r-4', 'r-5'],
        ['r-6', 'r-7'],
      ]);
      assert.equal(statSync(journal).mode & 0o777, 0o700);

      // The reader shipped and deleted the oldest segment: there is room for one more.
      rmSync(join(journal, 'journal-1.jsonl'));
      for (let i = 10; i < 14; i++) publishDecision(decisionEvent(`r-${i}`));
      await sink.flush();
      assert.deepEqual(journalSegments(journal), [2, 3, 4, 5]);
      assert.deepEqual(ids(5), ['r-10', 'r-11']);
      assert.equal(sink.dropped, 4);
    } finally {
      await sink.close();
    }
    // A restart appends to the newest segment.
    const again = createAuditFileSink(journal, { flushMs: 60_000, segments: { bytes: 2 * line, count: 4 } });
    publishDecision(decisionEvent('r-20'));
    await again.close();
    assert.deepEqual(readdirSync(journal).sort(), [
      'journal-2.jsonl',
      'journal-3.jsonl',
      'journal-4.jsonl',
      'journal-5.jsonl',
    ]);
    assert.equal(sink.dropped, 4);
    assert.equal(again.dropped, 1, 'still full');
  });
});
