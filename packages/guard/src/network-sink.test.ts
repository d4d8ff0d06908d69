import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer, type Server } from 'node:https';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { gunzipSync } from 'node:zlib';
import { after, before, describe, it } from 'node:test';
import { createTestCa, type TestCa } from '@lockstep/testkit';
import { createNetworkSink } from './network-sink.ts';
import { publishDecision, type DecisionEvent } from './steps/audit.ts';

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

/** A collector that records what it receives (stream, dropped, event ids). */
async function collector(port = 0): Promise<{ server: Server; url: string; received: { stream: string; dropped: number; ids: string[] }[] }> {
  const received: { stream: string; dropped: number; ids: string[] }[] = [];
  const server = createServer({ ...collectorTls, ca: ca.bundlePem, requestCert: true }, (request, response) => {
    const chunks: Buffer[] = [];
    request.on('data', (chunk: Buffer) => chunks.push(chunk)).on('end', () => {
      const batch = JSON.parse(gunzipSync(Buffer.concat(chunks)).toString()) as { stream: string; dropped: number; events: { event: DecisionEvent }[] };
      received.push({ stream: batch.stream, dropped: batch.dropped, ids: batch.events.map((entry) => entry.event.requestId) });
      response.writeHead(200, { 'content-type': 'application/json' }).end('{}');
    });
  });
  await new Promise<void>((resolve) => server.listen(port, '127.0.0.1', resolve));
  return { server, url: `https://127.0.0.1:${(server.address() as AddressInfo).port}/v1/audit/events`, received };
}

const event = (requestId: string): DecisionEvent => ({
  time: new Date().toISOString(), service: 'orders', requestId, caller: null, sub: null, txn: null, method: 'GET', route: '/x', action: 'x', resource: 'orders',
  decision: 'allow', policyIds: [], policyVersion: null, reason: 'LOCKSTEP_ALLOW', dryRun: false, latencyMs: 0.1, traceId: null,
});

describe('network sink', () => {
  it('spools while the collector is away, keeps the spool across a restart, and replays it oldest-first', async () => {
    const spoolDir = join(scratch, 'restart');
    const up = await collector();
    const port = Number(new URL(up.url).port);
    await new Promise<void>((resolve) => up.server.close(() => resolve()));
    const first = createNetworkSink({ url: up.url, tls: () => tls, serverSpiffeId: COLLECTOR_ID, spoolDir, flushMs: 50, retryMs: 50 });
    for (let index = 0; index < 5; index += 1) publishDecision(event(`old-${index}`));
    await first.flush();
    await first.close();
    assert.equal(first.stats.spooled, 5);
    assert.equal(first.stats.sent, 0);

    const back = await collector(port);
    const second = createNetworkSink({ url: up.url, tls: () => tls, serverSpiffeId: COLLECTOR_ID, spoolDir, flushMs: 50, retryMs: 50 });
    publishDecision(event('new-0'));
    await second.flush();
    await second.close();
    await new Promise<void>((resolve) => back.server.close(() => resolve()));
    assert.deepEqual(back.received.flatMap((batch) => batch.ids), ['old-0', 'old-1', 'old-2', 'old-3', 'old-4', 'new-0'], 'the previous run\'s events first, in order');
    assert.deepEqual(back.received.map((batch) => batch.stream), [first.stream, second.stream]);
  });

  it('drops what does not fit a full spool, counts it, and tells the collector', async () => {
    const spoolDir = join(scratch, 'full');
    const down = await collector();
    const port = Number(new URL(down.url).port);
    await new Promise<void>((resolve) => down.server.close(() => resolve()));
    const errors: string[] = [];
    const sink = createNetworkSink({ url: down.url, tls: () => tls, serverSpiffeId: COLLECTOR_ID, spoolDir, maxSpoolBytes: 2_048, batchSize: 2, flushMs: 50, retryMs: 50, onError: (error) => errors.push(error.message) });
    for (let index = 0; index < 20; index += 1) publishDecision(event(`e-${index}`));
    await sink.flush();
    assert.ok(sink.stats.dropped > 0, 'some events did not fit');
    assert.equal(sink.stats.dropped + sink.stats.spooled, 20, 'every event is either spooled or counted as dropped');
    assert.ok(errors.some((message) => /spool is full/.test(message)));
    const back = await collector(port);
    await sink.flush();
    await sink.close();
    await new Promise<void>((resolve) => back.server.close(() => resolve()));
    assert.equal(back.received.flatMap((batch) => batch.ids).length, sink.stats.spooled);
    assert.ok(back.received.every((batch) => batch.dropped === sink.stats.dropped), 'the drop count travels with every batch');
  });

  it('refuses to talk to a collector with another identity', async () => {
    const impostor = await collector();
    const sink = createNetworkSink({ url: impostor.url, tls: () => tls, serverSpiffeId: 'spiffe://shop.test/lockstep/control-plane', spoolDir: join(scratch, 'impostor'), flushMs: 50 });
    publishDecision(event('secret'));
    await sink.flush();
    await sink.close();
    await new Promise<void>((resolve) => impostor.server.close(() => resolve()));
    assert.deepEqual(impostor.received, [], 'nothing sent to the impostor');
    assert.equal(sink.stats.spooled, 1);
  });
});
