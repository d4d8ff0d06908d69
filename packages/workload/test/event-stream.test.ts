/**
 * The server-sent events loop on its own, against a plain HTTP server that plays one answer per
 * connection: it resumes with Last-Event-ID, takes a silent connection as dead while comments keep
 * one alive, honours `retry:` and backs off from it on failures, reports refusals with their body,
 * decodes a character split across chunks, and stops at once on abort.
 */
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import { it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { Agent } from 'undici';
import type { EventSourceMessage } from 'eventsource-parser';
import { followEventStream } from '../src/event-stream.ts';

const SSE = { 'content-type': 'text/event-stream' };
const answers: ((response: ServerResponse) => Promise<void> | void)[] = [
  async (response) => {
    const event = Buffer.from('retry: 150\n\nid: 7\nevent: greeting\ndata: é\n\n');
    const split = event.indexOf(Buffer.from('é')) + 1;
    response.writeHead(200, SSE).write(event.subarray(0, split));
    await sleep(20);
    response.write(event.subarray(split));
    // …then nothing: the client must give up on this connection by itself.
  },
  (response) => {
    response.writeHead(503, { 'content-type': 'text/plain' }).end('busy, come back later');
  },
  async (response) => {
    response.writeHead(200, SSE);
    for (let ping = 0; ping < 4; ping++) {
      response.write(': ping\n\n');
      await sleep(100);
    }
    response.end('data: bye\n\n');
  },
];

it('resumes, detects silence, honours retry: with backoff, reports refusals, and stops on abort', async () => {
  const lastEventIds: (string | undefined)[] = [];
  const server = createServer((request: IncomingMessage, response: ServerResponse) => {
    lastEventIds.push(request.headers['last-event-id'] as string | undefined);
    void (
      answers[lastEventIds.length - 1] ??
      ((idle) => {
        idle.writeHead(200, SSE).flushHeaders();
      })
    )(response);
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const dispatcher = new Agent();
  const stop = new AbortController();
  const messages: EventSourceMessage[] = [];
  const downs: { reason: string; retryInMs: number }[] = [];
  let opened = 0;
  let lastEventId: string | null = null;
  // One endpoint, in plain HTTP: what is tested here is the loop, not the transport (failover.test.ts
  // follows real control planes over mTLS). A set of one, built by hand: controlPlaneEndpoints takes https only.
  const origin = `http://127.0.0.1:${(server.address() as { port: number }).port}`;
  const endpoints = { urls: [origin], order: () => [origin], ok() {}, failed() {} };
  const following = followEventStream(endpoints, '/events', {
    dispatcher,
    signal: stop.signal,
    silenceMs: 300,
    lastEventId: () => lastEventId,
    onOpen: () => {
      opened += 1;
    },
    onMessage: (message) => {
      messages.push(message);
      lastEventId = message.id ?? lastEventId;
    },
    onDown: (reason, retryInMs) => downs.push({ reason, retryInMs }),
  });
  try {
    // Three streams opened: the first, the third, and a fourth left idle.
    for (const started = Date.now(); opened < 3; await sleep(20)) {
      assert.ok(Date.now() - started < 5_000, `opened ${opened} streams`);
    }
    assert.deepEqual(messages, [
      { id: '7', event: 'greeting', data: 'é' },
      { id: undefined, event: undefined, data: 'bye' },
    ]);
    assert.deepEqual(lastEventIds.slice(0, 4), [undefined, '7', '7', '7']);
    assert.deepEqual(
      downs.slice(0, 3).map(({ reason }) => reason),
      [
        'nothing received for 0.3 s',
        'GET /events answered 503 (text/plain): busy, come back later',
        'the server ended the stream',
      ],
    );
    const [afterSilence, afterRefusal, afterEnd] = downs.map(({ retryInMs }) => retryInMs) as [number, number, number];
    assert.ok(afterSilence >= 75 && afterSilence <= 150, `the server's retry (150 ms) with jitter: ${afterSilence}`);
    assert.ok(afterRefusal >= 150 && afterRefusal <= 300, `doubled after a failed attempt: ${afterRefusal}`);
    assert.ok(afterEnd >= 75 && afterEnd <= 150, `back to the server's retry once a stream opened: ${afterEnd}`);
  } finally {
    stop.abort();
    const stopped = performance.now();
    await following;
    assert.ok(performance.now() - stopped < 250, 'the open stream is left at once, not at its silence timeout');
    await dispatcher.close();
    server.close();
  }
});
