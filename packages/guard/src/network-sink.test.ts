import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import {
  appendFileSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  renameSync,
  rmSync,
  writeFileSync,
} from 'node:fs';
import { createServer, type Server } from 'node:https';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { gunzipSync } from 'node:zlib';
import { after, before, describe, it } from 'node:test';
import { createTestCa, type TestCa } from '@lockstep/testkit';
import { createAuditFileSink } from './audit-file-sink.ts';
import { GuardConfigError } from './errors.ts';
import { createNetworkSink, type NetworkSinkOptions } from './network-sink.ts';
import { decisionToJson, publishDecision, type DecisionEvent } from './steps/audit.ts';

const scratch = mkdtempSync(join(tmpdir(), 'lockstep-sink-'));
let ca: TestCa;
let tls: { cert: string; key: string; ca: string };
let collectorTls: { cert: string; key: string };
const COLLECTOR_ID = 'spiffe://shop.test/svc/collector';

before(async () => {
  ca = await createTestCa({ trustDomain: 'shop.test' });
  const client = await ca.issueSvid({ service: 'orders' });
  const server = await ca.issueSvid({ service: 'collector' });
  tls = { cert: client.chainPem, key: client.keyPem, ca: ca.bundlePem };
  collectorTls = { cert: server.chainPem, key: server.keyPem };
});
after(() => rmSync(scratch, { recursive: true, force: true }));

interface Received {
  readonly stream: string;
  readonly dropped: number;
  readonly written: number;
  readonly final: boolean;
  readonly seqs: number[];
  readonly ids: string[];
}

interface Collector {
  readonly server: Server;
  readonly url: string;
  readonly port: number;
  /** Every batch that reached it, answered 200 or not. */
  readonly received: Received[];
  stop(): Promise<void>;
}

/** How a batch is answered: a status (with `{}`), or a status and a body. */
type Answer = number | { readonly status: number; readonly body: string };

/** A collector that records what it receives; `answer` answers each batch (200 by default). */
async function collector(port = 0, answer: (batch: Received) => Answer = () => 200): Promise<Collector> {
  const received: Received[] = [];
  const server = createServer({ ...collectorTls, ca: ca.bundlePem, requestCert: true }, (request, response) => {
    const chunks: Buffer[] = [];
    request
      .on('data', (chunk: Buffer) => chunks.push(chunk))
      .on('end', () => {
        const batch = JSON.parse(gunzipSync(Buffer.concat(chunks)).toString()) as {
          stream: string;
          dropped: number;
          written: number;
          final?: boolean;
          events: { seq: number; event: DecisionEvent }[];
        };
        const entry: Received = {
          stream: batch.stream,
          dropped: batch.dropped,
          written: batch.written,
          final: batch.final === true,
          seqs: batch.events.map((item) => item.seq),
          ids: batch.events.map((item) => item.event.requestId),
        };
        received.push(entry);
        const given = answer(entry);
        const { status, body } = typeof given === 'number' ? { status: given, body: '{}' } : given;
        response.writeHead(status, { 'content-type': 'application/json' }).end(body);
      });
  });
  await new Promise<void>((resolve) => server.listen(port, '127.0.0.1', resolve));
  const bound = (server.address() as AddressInfo).port;
  return {
    server,
    received,
    port: bound,
    url: `https://127.0.0.1:${bound}/v1/audit/events`,
    stop: () => new Promise<void>((resolve) => server.close(() => resolve())),
  };
}

/** A URL where nothing listens (a collector that was started and stopped). */
async function deadCollector(): Promise<{ url: string; port: number }> {
  const down = await collector();
  await down.stop();
  return { url: down.url, port: down.port };
}

const event = (requestId: string): DecisionEvent => ({
  time: new Date().toISOString(),
  service: 'orders',
  requestId,
  caller: null,
  sub: null,
  txn: null,
  method: 'GET',
  route: '/x',
  action: 'x',
  resource: 'orders',
  decision: 'allow',
  policyIds: [],
  policyVersion: null,
  reason: 'LOCKSTEP_ALLOW',
  dryRun: false,
  latencyMs: 0.1,
  traceId: null,
});

function sink(url: string, spoolDir: string, extra: Partial<NetworkSinkOptions> = {}) {
  const defaults = { url, tls: () => tls, serverSpiffeId: COLLECTOR_ID, spoolDir, flushMs: 50, retryMs: 50 };
  return createNetworkSink({ ...defaults, ...extra });
}

const withEvents = (batches: readonly Received[]) => batches.filter((batch) => batch.seqs.length > 0);
const journalFiles = (spoolDir: string) => readdirSync(spoolDir).filter((name) => name.startsWith('journal-'));
const cursorOf = (spoolDir: string) =>
  JSON.parse(readFileSync(join(spoolDir, 'cursor.json'), 'utf8')) as {
    stream: string;
    seq: number;
    offset: number;
    dropped: number;
    closed: boolean;
  };

describe('network sink', () => {
  it('resumes the same stream after a restart, where the collector stopped acknowledging', async () => {
    const spoolDir = join(scratch, 'resume');
    const up = await collector();
    const first = sink(up.url, spoolDir);
    for (let index = 0; index < 3; index += 1) publishDecision(event(`a-${index}`));
    await first.flush();
    await up.stop();
    // The collector is away: these wait in the journal (the cursor stays behind them).
    for (let index = 0; index < 2; index += 1) publishDecision(event(`b-${index}`));
    await first.flush();
    await first.close();
    assert.equal(first.stats.sent, 3);
    assert.equal(first.stats.spooled, 2);
    assert.deepEqual([cursorOf(spoolDir).seq, cursorOf(spoolDir).closed], [3, false], 'the stream stays open');

    const back = await collector(up.port);
    const second = sink(back.url, spoolDir);
    assert.equal(second.stream, first.stream, 'the same stream');
    publishDecision(event('c-0'));
    await second.flush();
    await second.close();
    await back.stop();
    const shipped = withEvents(back.received);
    assert.deepEqual(
      shipped.flatMap((batch) => batch.ids),
      ['b-0', 'b-1', 'c-0'],
      'what the first run could not send, then the new event',
    );
    assert.deepEqual(
      shipped.flatMap((batch) => batch.seqs),
      [4, 5, 6],
      'numbered on from the cursor',
    );
    assert.ok(back.received.every((batch) => batch.stream === first.stream));
    const final = back.received.at(-1);
    assert.deepEqual([final?.final, final?.seqs, final?.written], [true, [], 6], 'close() ends the stream');
  });

  it('sends a batch again under the same positions when its acknowledgement is lost', async () => {
    const spoolDir = join(scratch, 'lost-answer');
    let answers = 0;
    const flaky = await collector(0, (batch) => (batch.seqs.length > 0 && answers++ === 0 ? 503 : 200));
    const shipper = sink(flaky.url, spoolDir);
    publishDecision(event('x-0'));
    publishDecision(event('x-1'));
    await shipper.flush();
    await shipper.flush();
    await shipper.close();
    await flaky.stop();
    const shipped = withEvents(flaky.received);
    assert.deepEqual(
      shipped.map((batch) => batch.seqs),
      [
        [1, 2],
        [1, 2],
      ],
      'the same positions: the collector stores them once',
    );
    assert.equal(shipper.stats.sent, 2);
  });

  it('skips a torn line, counts it in dropped, and keeps the count in the cursor', async () => {
    const spoolDir = join(scratch, 'torn');
    mkdirSync(spoolDir, { recursive: true });
    // A journal left by a crash: one whole line, then one cut short mid-write.
    const whole = decisionToJson(event('before-crash'));
    writeFileSync(join(spoolDir, 'journal-1.jsonl'), `${whole}\n${decisionToJson(event('torn')).slice(0, 40)}`);
    const up = await collector();
    const shipper = sink(up.url, spoolDir);
    publishDecision(event('after-restart'));
    await shipper.flush();
    assert.equal(shipper.stats.dropped, 1);
    await shipper.close();
    await up.stop();
    const shipped = withEvents(up.received);
    assert.deepEqual(
      shipped.flatMap((batch) => batch.ids),
      ['before-crash', 'after-restart'],
      'the line after the torn one is whole',
    );
    assert.deepEqual(
      shipped.flatMap((batch) => batch.seqs),
      [1, 2],
      'no position for the torn line: not a gap',
    );
    assert.ok(shipped.every((batch) => batch.dropped === 1));
    assert.equal(cursorOf(spoolDir).dropped, 1);
  });

  it('sends an empty keep-alive batch when nothing was sent for keepAliveMs', async () => {
    const up = await collector();
    const shipper = sink(up.url, join(scratch, 'keep-alive'), { flushMs: 20, keepAliveMs: 100 });
    publishDecision(event('k-0'));
    await shipper.flush();
    await new Promise((resolve) => setTimeout(resolve, 400));
    await shipper.close();
    await up.stop();
    // After the event's batch (the journal's writer thread may take longer to start than keepAliveMs).
    const shipped = up.received.findIndex((batch) => batch.seqs.length > 0);
    const keepAlives = up.received.slice(shipped + 1).filter((batch) => batch.seqs.length === 0 && !batch.final);
    assert.ok(keepAlives.length >= 2, `keep-alives every ~100 ms (got ${keepAlives.length})`);
    assert.ok(keepAlives.every((batch) => batch.stream === shipper.stream && batch.written === 1));
  });

  it('ends the stream on close; the next start begins a new stream where it ended', async () => {
    const spoolDir = join(scratch, 'final');
    const up = await collector();
    const first = sink(up.url, spoolDir);
    publishDecision(event('f-0'));
    publishDecision(event('f-1'));
    await first.close();
    const last = up.received.at(-1);
    assert.deepEqual([last?.stream, last?.final, last?.written, last?.seqs], [first.stream, true, 2, []]);
    assert.equal(cursorOf(spoolDir).closed, true);
    const second = sink(up.url, spoolDir);
    assert.notEqual(second.stream, first.stream, 'a new stream');
    publishDecision(event('g-0'));
    await second.close();
    await up.stop();
    const shipped = withEvents(up.received);
    assert.deepEqual(
      shipped.map((batch) => [batch.stream, batch.ids, batch.seqs]),
      [
        [first.stream, ['f-0', 'f-1'], [1, 2]],
        [second.stream, ['g-0'], [1]],
      ],
    );
  });

  it('ships from the audit file; a new stream starts when the file was rotated while the guard was down', async () => {
    const dir = join(scratch, 'rotated');
    const spoolDir = join(dir, 'spool');
    const path = join(dir, 'audit.jsonl');
    const up = await collector();
    let file = createAuditFileSink(path, { flushMs: 60_000 });
    const auditFile = () => ({ path, flush: () => file.flush(), dropped: () => file.dropped });
    const first = sink(up.url, spoolDir, { auditFile: auditFile() });
    publishDecision(event('r-0'));
    await first.flush();
    await up.stop();
    publishDecision(event('r-1'));
    await first.flush();
    await file.close();
    await first.close();
    assert.deepEqual(journalFiles(spoolDir), [], 'no journal of its own');
    assert.equal(cursorOf(spoolDir).closed, false);

    // logrotate renamed the file; the guard starts again with a new, empty one.
    renameSync(path, `${path}.1`);
    file = createAuditFileSink(path, { flushMs: 60_000 });
    publishDecision(event('r-2'));
    await file.flush();
    const back = await collector(up.port);
    const warnings: string[] = [];
    const onWarning = (message: string) => warnings.push(message);
    const second = sink(back.url, spoolDir, { auditFile: auditFile(), onWarning });
    await second.flush();
    await file.close();
    await second.close();
    await back.stop();
    assert.notEqual(second.stream, first.stream);
    assert.equal(warnings.length, 1);
    const rotated = new RegExp(`rotated or truncated while the guard was down.*${first.stream} ends at position 1`);
    assert.match(warnings[0] ?? '', rotated);
    const shipped = withEvents(back.received).map((batch) => [batch.stream, batch.ids, batch.seqs]);
    assert.deepEqual(shipped, [[second.stream, ['r-2'], [1]]]);
    assert.equal(readFileSync(`${path}.1`, 'utf8').split('\n').length, 3, 'the audit file is never truncated');
  });

  it('drops what does not fit a full journal before journaling it, counts it, tells the collector', async () => {
    const spoolDir = join(scratch, 'full');
    const down = await deadCollector();
    const errors: string[] = [];
    const onError = (error: Error) => errors.push(error.message);
    const shipper = sink(down.url, spoolDir, { maxSpoolBytes: 4096, batchSize: 2, onError });
    for (let index = 0; index < 40; index += 1) publishDecision(event(`e-${index}`));
    await shipper.flush();
    const lines = (name: string) => readFileSync(join(spoolDir, name), 'utf8').split('\n').filter(Boolean).length;
    const journaled = journalFiles(spoolDir).reduce((sum, name) => sum + lines(name), 0);
    assert.ok(shipper.stats.dropped > 0, 'some events did not fit');
    assert.equal(shipper.stats.dropped + journaled, 40, 'every event is either journaled or counted as dropped');
    assert.ok(errors.some((message) => /unreachable/.test(message)));
    const back = await collector(down.port);
    await shipper.flush();
    await shipper.close();
    await back.stop();
    assert.equal(withEvents(back.received).flatMap((batch) => batch.ids).length, journaled);
    assert.ok(
      back.received.every((batch) => batch.dropped === shipper.stats.dropped),
      'with each batch',
    );
    assert.equal(journalFiles(spoolDir).length, 1, 'shipped segments are deleted');
  });

  it('keeps the count of a full journal in the cursor while the collector is away, across a restart', async () => {
    const spoolDir = join(scratch, 'full-restart');
    const down = await deadCollector();
    const options = { maxSpoolBytes: 4096, batchSize: 2, onError: () => undefined };
    const first = sink(down.url, spoolDir, options);
    for (let index = 0; index < 40; index += 1) publishDecision(event(`d-${index}`));
    await first.flush();
    const dropped = first.stats.dropped;
    assert.ok(dropped > 0, 'some events did not fit');
    // Nothing was acknowledged, yet a kill -9 now loses no drop: the count is on disk.
    assert.deepEqual([cursorOf(spoolDir).seq, cursorOf(spoolDir).dropped], [0, dropped], 'in the cursor in a round');
    await first.close();
    assert.deepEqual([cursorOf(spoolDir).dropped, cursorOf(spoolDir).closed], [dropped, false]);

    const back = await collector(down.port);
    const second = sink(back.url, spoolDir, options);
    const resumed = [second.stream, second.stats.dropped];
    await second.flush();
    await second.close();
    await back.stop();
    assert.deepEqual(resumed, [first.stream, dropped], 'the same stream, its drops');
    assert.ok(withEvents(back.received).length > 0);
    assert.ok(
      back.received.every((batch) => batch.dropped === dropped),
      'every batch after the restart says so',
    );
  });

  it('keeps the events while the URL answers as no collector does (404, 405, 403, a bare 400, 502)', async () => {
    const spoolDir = join(scratch, 'not-the-collector');
    const answers = [404, 405, 403, { status: 400, body: '<html>Bad Request</html>' }, 502];
    let answered = 0;
    const proxy = await collector(0, (batch) => (batch.seqs.length > 0 ? (answers[answered++] ?? 200) : 200));
    const errors: string[] = [];
    const shipper = sink(proxy.url, spoolDir, { onError: (error) => errors.push(error.message) });
    publishDecision(event('p-0'));
    publishDecision(event('p-1'));
    for (let round = 0; round <= answers.length; round += 1) await shipper.flush();
    await shipper.close();
    await proxy.stop();
    assert.deepEqual(
      withEvents(proxy.received).map((batch) => batch.seqs),
      Array(answers.length + 1).fill([1, 2]),
      'the same events, until the collector takes them',
    );
    assert.deepEqual([shipper.stats.sent, shipper.stats.refused, shipper.stats.dropped], [2, 0, 0]);
    assert.ok(proxy.received.every((batch) => batch.dropped === 0));
    const url = proxy.url.replaceAll('.', '\\.');
    assert.match(
      errors[0] ?? '',
      new RegExp(
        `^the URL ${url} answered 404 .*; the journal keeps the events and they ` +
          "are sent again\\. Is audit\\.collector\\.url the collector's /v1/audit/events on the control plane\\?$",
      ),
    );
    assert.match(errors[3] ?? '', /answered 400 "<html>Bad Request<\/html>".*This is not the collector's refusal/);
  });

  it('skips a batch the collector refuses as invalid or too large: its positions stay missing from the stream', async () => {
    const spoolDir = join(scratch, 'refused');
    const invalid = JSON.stringify({ error: 'LOCKSTEP_CP_REQUEST_INVALID', message: 'event.route must be a string' });
    const strict = await collector(0, (batch) =>
      batch.ids.includes('bad') ? { status: 400, body: invalid } : batch.ids.includes('huge') ? 413 : 200,
    );
    const errors: string[] = [];
    const shipper = sink(strict.url, spoolDir, { batchSize: 2, onError: (error) => errors.push(error.message) });
    for (const id of ['ok-0', 'ok-1', 'bad', 'ok-3', 'huge', 'ok-5', 'ok-6']) publishDecision(event(id));
    await shipper.flush();
    const counts = [shipper.stats.sent, shipper.stats.refused, shipper.stats.dropped, cursorOf(spoolDir).dropped];
    await shipper.close();
    await strict.stop();
    assert.deepEqual(counts, [3, 4, 0, 0], 'sent, refused, and not also dropped (the monitor sees the gap)');
    const acknowledged = strict.received.filter((batch) => !batch.ids.includes('bad') && !batch.ids.includes('huge'));
    assert.deepEqual(
      withEvents(acknowledged).map((batch) => [batch.seqs, batch.dropped]),
      [
        [[1, 2], 0],
        [[7], 0],
      ],
      'positions 3–6 never arrive: the monitor counts them as never arrived',
    );
    const refusals = errors.filter((message) => message.startsWith('AUDIT EVENTS DROPPED'));
    assert.equal(refusals.length, 2);
    assert.match(refusals[0] ?? '', /refused positions 3–4 of stream \S+ \(2 events\) as invalid \(400 .*_INVALID/);
    assert.match(refusals[1] ?? '', /refused positions 5–6 of stream \S+ \(2 events\) as invalid \(413 /);
  });

  it('counts in the stream the events the audit file sink could not write', async () => {
    const dir = join(scratch, 'audit-file-drops');
    const path = join(dir, 'audit.jsonl');
    mkdirSync(dir, { recursive: true });
    writeFileSync(path, '');
    let notWritten = 0;
    const up = await collector();
    const shipper = sink(up.url, join(dir, 'spool'), {
      auditFile: { path, flush: async () => undefined, dropped: () => notWritten },
    });
    // The audit file sink's disk was full for three events.
    notWritten = 3;
    appendFileSync(path, `${decisionToJson(event('w-0'))}\n`);
    await shipper.flush();
    const counts = [shipper.stats.dropped, cursorOf(join(dir, 'spool')).dropped];
    await shipper.close();
    await up.stop();
    assert.deepEqual(counts, [3, 3], 'in the stream, and in the cursor');
    assert.deepEqual(
      withEvents(up.received).map((batch) => [batch.ids, batch.dropped]),
      [[['w-0'], 3]],
    );
  });

  it('follows its journal from segment to segment, also across a restart, and deletes what it shipped', async () => {
    const spoolDir = join(scratch, 'segments');
    const up = await collector();
    // Segments of 2 KiB: a few events each.
    const first = sink(up.url, spoolDir, { maxSpoolBytes: 16 * 1024, batchSize: 3 });
    for (let index = 0; index < 10; index += 1) publishDecision(event(`s-${index}`));
    await first.flush();
    await up.stop();
    for (let index = 10; index < 30; index += 1) publishDecision(event(`s-${index}`));
    await first.flush();
    await first.close();
    assert.ok(
      journalFiles(spoolDir).length > 3,
      `the unshipped rest spans segments (${journalFiles(spoolDir).join(', ')})`,
    );

    const back = await collector(up.port);
    const second = sink(back.url, spoolDir, { maxSpoolBytes: 16 * 1024, batchSize: 3 });
    await second.flush();
    await second.close();
    await back.stop();
    const shipped = withEvents([...up.received, ...back.received]);
    assert.deepEqual(
      shipped.flatMap((batch) => batch.ids),
      Array.from({ length: 30 }, (_, index) => `s-${index}`),
    );
    assert.deepEqual(
      shipped.flatMap((batch) => batch.seqs),
      Array.from({ length: 30 }, (_, index) => index + 1),
    );
    assert.ok(shipped.every((batch) => batch.stream === first.stream));
    assert.equal(journalFiles(spoolDir).length, 1, 'only the segment being written is left');
  });

  it('refuses a spool directory another live process holds, and takes over a stale lock', async () => {
    const spoolDir = join(scratch, 'lock');
    const down = await deadCollector();
    const holder = sink(down.url, spoolDir);
    const inUse = (error: unknown) =>
      error instanceof GuardConfigError && /in use by process \d+.*another spoolDir/.test(error.message);
    assert.throws(() => sink(down.url, spoolDir), inUse);
    await holder.close();
    assert.equal(existsSync(join(spoolDir, 'lock')), false, 'released on close');

    // A process that has exited (killed with its lock in place).
    const gone = spawnSync(process.execPath, ['-e', '']).pid;
    writeFileSync(join(spoolDir, 'lock'), `${gone}\n`);
    const next = sink(down.url, spoolDir);
    assert.equal(readFileSync(join(spoolDir, 'lock'), 'utf8'), `${process.pid}\n`);
    await next.close();
  });

  it('replays the spool file of an earlier version under its own streams, then deletes it', async () => {
    const spoolDir = join(scratch, 'legacy');
    mkdirSync(spoolDir, { recursive: true });
    const events = [
      { seq: 7, event: event('old-7') },
      { seq: 8, event: event('old-8') },
    ];
    const batch = { stream: 'old-stream', events };
    appendFileSync(join(spoolDir, 'spool.jsonl'), `${JSON.stringify(batch)}\n`);
    const up = await collector();
    const shipper = sink(up.url, spoolDir);
    publishDecision(event('new-0'));
    await shipper.flush();
    await shipper.close();
    await up.stop();
    assert.deepEqual(
      withEvents(up.received).map((batch) => [batch.stream, batch.ids, batch.dropped, batch.written]),
      [
        ['old-stream', ['old-7', 'old-8'], 0, 8],
        [shipper.stream, ['new-0'], 0, 1],
      ],
    );
    assert.equal(existsSync(join(spoolDir, 'spool.jsonl')), false);
  });

  it('with several collectors (replicas): a batch goes past a dead one, or one answering 503, to the next', async () => {
    const dead = await deadCollector();
    const busy = await collector(0, () => 503);
    const live = await collector();
    const errors: string[] = [];
    const shipper = createNetworkSink({
      urls: [dead.url, busy.url, live.url],
      tls: () => tls,
      serverSpiffeId: COLLECTOR_ID,
      spoolDir: join(scratch, 'replicas'),
      flushMs: 50,
      retryMs: 50,
      onError: (error) => errors.push(error.message),
    });
    publishDecision(event('r-0'));
    await shipper.flush();
    await busy.stop();
    publishDecision(event('r-1'));
    await shipper.flush();
    await shipper.close();
    await live.stop();
    assert.deepEqual(
      withEvents(live.received).map((batch) => batch.ids),
      [['r-0'], ['r-1']],
      'each batch once, at the live one',
    );
    assert.equal(withEvents(busy.received).length, 1, 'the busy one was asked once: then the live one came first');
    assert.deepEqual(errors, [], 'no failure to report: the events were taken');
    assert.equal(shipper.stats.sent, 2);
  });

  it('with several collectors, all away: the events wait, and one report names each', async () => {
    const [first, second] = [await deadCollector(), await deadCollector()];
    const errors: string[] = [];
    const shipper = createNetworkSink({
      urls: [first.url, second.url],
      tls: () => tls,
      serverSpiffeId: COLLECTOR_ID,
      spoolDir: join(scratch, 'replicas-away'),
      flushMs: 50,
      retryMs: 50,
      onError: (error) => errors.push(error.message),
    });
    publishDecision(event('w-0'));
    await shipper.flush();
    await shipper.close();
    assert.equal(shipper.stats.spooled, 1);
    const unreachable = (url: string) => `the collector is unreachable at ${url} (connect ECONNREFUSED`;
    assert.ok(errors[0]?.startsWith(unreachable(first.url)), errors[0]);
    assert.ok(errors[0]?.includes(`; then ${unreachable(second.url)}`), errors[0]);
    assert.throws(
      () => createNetworkSink({ tls: () => tls, serverSpiffeId: COLLECTOR_ID, spoolDir: join(scratch, 'no-url') }),
      /either url: .* or urls: \[\.\.\.\], not both/,
    );
  });

  it('refuses to talk to a collector with another identity', async () => {
    const impostor = await collector();
    const serverSpiffeId = 'spiffe://shop.test/lockstep/control-plane';
    const shipper = sink(impostor.url, join(scratch, 'impostor'), { serverSpiffeId });
    publishDecision(event('secret'));
    await shipper.flush();
    await shipper.close();
    await impostor.stop();
    assert.deepEqual(impostor.received, [], 'nothing sent to the impostor');
    assert.equal(shipper.stats.spooled, 1, 'the event waits in the journal');
  });
});
