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
    const sender = createSender({ scope: new Set(['127.0.0.1:1']), trustBundle: '', trustDomain: 'scan.test', concurrency: 1 });
    const inScope = createSender({ scope: new Set([endpoint]), trustBundle: '', trustDomain: 'scan.test', concurrency: 1 });
    try {
      await assert.rejects(sender.send({ endpoint, method: 'GET', path: '/', headers: [], via: 'plaintext' }), /not a registered address of this scan/);
      assert.equal(connections, 0);
      const answer = await inScope.send({ endpoint, method: 'GET', path: '/', headers: [['host', endpoint]], via: 'plaintext' });
      assert.equal(answer.status, 204);
      assert.equal(connections, 1);
    } finally {
      sender.close();
      inScope.close();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    }
  });
});
