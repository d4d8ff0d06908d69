/**
 * Connections that say nothing. Node times a request from its first byte only, so a client that
 * finishes the TLS handshake (no certificate needed) and then stays silent would hold its connection
 * for ever: enough of them exhaust the server. The guard closes such a connection once
 * FIRST_REQUEST_MS pass without a request, on every adapter; one that sent a request is left to Node's
 * keep-alive timeout. Real TLS; the guard's timer is driven by node:test's mock clock.
 */
import assert from 'node:assert/strict';
import { connect, type TLSSocket } from 'node:tls';
import { after, before, describe, it, mock } from 'node:test';
import type { Guard } from '../src/index.ts';
import { FIRST_REQUEST_MS } from '../src/silent-connections.ts';
import { adapters, guardFor, startOrders, world, type RunningService, type World } from './fixture.ts';

let w: World;
let guard: Guard;
before(async () => {
  w = await world();
  guard = await guardFor(w);
});
after(() => guard.close());

function open(port: number): Promise<TLSSocket> {
  return new Promise((resolve, reject) => {
    const socket = connect({ host: '127.0.0.1', port, rejectUnauthorized: false }, () => resolve(socket));
    socket.once('error', reject);
  });
}

const closed = (socket: TLSSocket) =>
  socket.closed ? Promise.resolve() : new Promise<void>((resolve) => socket.once('close', () => resolve()));

for (const adapter of adapters) {
  describe(`silent connections (${adapter})`, () => {
    let service: RunningService;
    before(async () => {
      service = await startOrders(adapter, guard);
    });
    after(() => service.close());

    it('closes a connection that sends no request within FIRST_REQUEST_MS, and keeps one that did', async () => {
      mock.timers.enable({ apis: ['setTimeout'] });
      try {
        const silent = await open(service.port);
        const talking = await open(service.port);
        talking.write('GET /health HTTP/1.1\r\nHost: orders\r\n\r\n');
        await new Promise((resolve) => talking.once('data', resolve));
        // The server registered both connections' timers once their handshakes ended on its side.
        await new Promise((resolve) => setImmediate(resolve));
        mock.timers.tick(FIRST_REQUEST_MS - 1);
        assert.equal(silent.closed, false, 'not before its time');
        mock.timers.tick(1);
        await closed(silent);
        assert.equal(talking.closed, false, 'a connection that sent a request is left to the keep-alive timeout');
        talking.destroy();
      } finally {
        mock.timers.reset();
      }
    });
  });
}
