import assert from 'node:assert/strict';
import { once } from 'node:events';
import type { AddressInfo } from 'node:net';
import { describe, it } from 'node:test';
import tls from 'node:tls';
import { createTestCa } from './create-test-ca.ts';

interface Side {
  readonly authorized: boolean;
  readonly authorizationError: string | undefined;
}
interface Peer {
  readonly certPem: string;
  readonly keyPem: string;
}

/**
 * One real TLS 1.3 handshake on loopback. Neither side rejects, so both verdicts of OpenSSL
 * (the server's on the client certificate, the client's on the server certificate) are observable.
 */
async function handshake(
  server: Peer,
  client: Peer | undefined,
  bundlePem: string,
): Promise<{ server: Side; client: Side }> {
  const tlsServer = tls.createServer({
    cert: server.certPem,
    key: server.keyPem,
    ca: bundlePem,
    requestCert: true,
    rejectUnauthorized: false,
  });
  const serverSide = new Promise<Side>((resolve) => {
    tlsServer.once('secureConnection', (socket) => {
      // The client hangs up as soon as it has seen both verdicts; the reset is expected.
      socket.on('error', () => {});
      resolve({ authorized: socket.authorized, authorizationError: socket.authorizationError?.toString() });
      socket.end();
    });
  });
  tlsServer.listen(0, '127.0.0.1');
  await once(tlsServer, 'listening');
  const { port } = tlsServer.address() as AddressInfo;
  const socket = tls.connect({
    host: '127.0.0.1',
    port,
    ca: bundlePem,
    rejectUnauthorized: false,
    checkServerIdentity: () => undefined,
    ...(client === undefined ? {} : { cert: client.certPem, key: client.keyPem }),
  });
  try {
    await once(socket, 'secureConnect');
    const clientSide = { authorized: socket.authorized, authorizationError: socket.authorizationError?.toString() };
    return { server: await serverSide, client: clientSide };
  } finally {
    socket.destroy();
    tlsServer.close();
    await once(tlsServer, 'close');
  }
}

describe('createTestCa: real TLS handshakes (OpenSSL 3)', () => {
  for (const intermediate of [false, true]) {
    it(`accepts SVIDs as server and client certificates (intermediate: ${intermediate})`, async () => {
      const ca = await createTestCa({ trustDomain: 'shop.test', intermediate });
      const orders = await ca.issueSvid({ service: 'orders' });
      const gateway = await ca.issueSvid({ service: 'gateway' });
      const result = await handshake(
        { certPem: orders.chainPem, keyPem: orders.keyPem },
        { certPem: gateway.chainPem, keyPem: gateway.keyPem },
        ca.bundlePem,
      );
      assert.deepEqual(result.server, { authorized: true, authorizationError: undefined });
      assert.deepEqual(result.client, { authorized: true, authorizationError: undefined });
      assert.equal(ca.intermediatePem !== undefined, intermediate);
    });
  }

  it('rejects an expired client certificate with CERT_HAS_EXPIRED', async () => {
    const ca = await createTestCa({ trustDomain: 'shop.test' });
    const server = await ca.issueSvid({ service: 'orders' });
    const expired = await ca.issueCert({
      uris: ['spiffe://shop.test/svc/gateway'],
      notBefore: new Date(Date.now() - 7_200_000),
      notAfter: new Date(Date.now() - 3_600_000),
    });
    const result = await handshake(server, expired, ca.bundlePem);
    assert.deepEqual(result.server, { authorized: false, authorizationError: 'CERT_HAS_EXPIRED' });
  });

  it('rejects a not-yet-valid client certificate with CERT_NOT_YET_VALID', async () => {
    const ca = await createTestCa({ trustDomain: 'shop.test' });
    const server = await ca.issueSvid({ service: 'orders' });
    const early = await ca.issueCert({
      uris: ['spiffe://shop.test/svc/gateway'],
      notBefore: new Date(Date.now() + 3_600_000),
      notAfter: new Date(Date.now() + 7_200_000),
    });
    const result = await handshake(server, early, ca.bundlePem);
    assert.deepEqual(result.server, { authorized: false, authorizationError: 'CERT_NOT_YET_VALID' });
  });

  it('rejects a certificate from another test CA (same trust domain name, different root)', async () => {
    const ca = await createTestCa({ trustDomain: 'shop.test' });
    const impostorCa = await createTestCa({ trustDomain: 'shop.test' });
    const server = await ca.issueSvid({ service: 'orders' });
    const impostor = await impostorCa.issueSvid({ service: 'gateway' });
    const result = await handshake(server, impostor, ca.bundlePem);
    assert.equal(result.server.authorized, false);
    assert.equal(result.server.authorizationError, 'UNABLE_TO_VERIFY_LEAF_SIGNATURE');
  });

  it('reports a handshake without a client certificate as unauthorized', async () => {
    const ca = await createTestCa({ trustDomain: 'shop.test' });
    const server = await ca.issueSvid({ service: 'orders' });
    const result = await handshake(server, undefined, ca.bundlePem);
    assert.equal(result.server.authorized, false);
    assert.equal(result.client.authorized, true);
  });

  it('refuses a malformed trust domain with a TypeError that says what to write', async () => {
    await assert.rejects(createTestCa({ trustDomain: 'Shop.Test' }), {
      name: 'TypeError',
      message: /e\.g\. "shop\.test"/,
    });
  });
});
