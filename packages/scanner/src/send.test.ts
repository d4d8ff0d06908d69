/**
 * The scanner sends only to the scan's scope: an endpoint outside it is refused before any connection.
 */
import assert from 'node:assert/strict';
import { createServer } from 'node:net';
import { describe, it } from 'node:test';
import { createSender } from './send.ts';

describe('createSender', () => {
  it('refuses an endpoint outside the scope without connecting, and sends to one inside it', async () => {
    let connections = 0;
    const server = createServer((socket) => {
      connections += 1;
      socket.once('data', () => socket.end('HTTP/1.1 204 No Content\r\nconnection: close\r\n\r\n'));
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const endpoint = `127.0.0.1:${(server.address() as { port: number }).port}`;
    const sender = createSender({
      scope: new Map([['127.0.0.1:1', null]]),
      trustBundle: '',
      trustDomain: 'scan.test',
      concurrency: 1,
    });
    const inScope = createSender({
      scope: new Map([[endpoint, null]]),
      trustBundle: '',
      trustDomain: 'scan.test',
      concurrency: 1,
    });
    try {
      await assert.rejects(
        sender.send({ endpoint, method: 'GET', path: '/', headers: [], via: 'plaintext' }),
        /not a registered address of this scan/,
      );
      assert.equal(connections, 0);
      const answer = await inScope.send({
        endpoint,
        method: 'GET',
        path: '/',
        headers: [['host', endpoint]],
        via: 'plaintext',
      });
      assert.equal(answer.status, 204);
      assert.equal(connections, 1);
    } finally {
      sender.close();
      inScope.close();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    }
  });
});

describe('createSender over TLS', () => {
  it('talks only to the service the registry names at an endpoint: another SVID there gets nothing', async () => {
    const { createServer: createHttpsServer } = await import('node:https');
    const { createTestCa } = await import('@lockstep/testkit');
    const ca = await createTestCa({ trustDomain: 'scan.test' });
    const payments = await ca.issueSvid({ service: 'payments' });
    let handled = 0;
    const server = createHttpsServer({ cert: payments.chainPem, key: payments.keyPem }, (_request, response) => {
      handled += 1;
      response.end('{}');
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const endpoint = `127.0.0.1:${(server.address() as { port: number }).port}`;
    const attempt = {
      endpoint,
      method: 'GET',
      path: '/',
      headers: [['host', endpoint]] as const,
      via: { name: 'none' },
    };
    const expectingOrders = createSender({
      scope: new Map([[endpoint, 'spiffe://scan.test/svc/orders']]),
      trustBundle: ca.bundlePem,
      trustDomain: 'scan.test',
      concurrency: 1,
    });
    const anyWorkload = createSender({
      scope: new Map([[endpoint, null]]),
      trustBundle: ca.bundlePem,
      trustDomain: 'scan.test',
      concurrency: 1,
    });
    try {
      const refused = await expectingOrders.send(attempt);
      assert.equal(refused.status, null);
      assert.equal(handled, 0, 'no request reached the impostor');
      const answered = await anyWorkload.send(attempt);
      assert.equal(answered.status, 200);
    } finally {
      expectingOrders.close();
      anyWorkload.close();
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    }
  });
});
