import assert from 'node:assert/strict';
import type { AddressInfo } from 'node:net';
import { connect, createServer, type Server, type TLSSocket } from 'node:tls';
import { after, before, describe, it } from 'node:test';
import { readTlsPeer, type TlsPeer } from './tls-peer.ts';
import { readX509Svid } from './x509-svid.ts';
import { createSigner, issueLeaf, type TestLeaf, type TestSigner } from './test-support.ts';

// Over real TLS on 127.0.0.1: the server asks for a certificate without requiring one, as the
// guard and the control plane do, and reports what readTlsPeer saw.
let ca: TestSigner;
let stranger: TestSigner;
let serverLeaf: TestLeaf;
let server: Server;
let port: number;
const seen: TlsPeer[] = [];

before(async () => {
  ca = await createSigner('trusted CA');
  stranger = await createSigner('foreign CA');
  serverLeaf = await issueLeaf(ca, { uris: ['spiffe://shop.test/svc/server'] });
  const tls = { cert: serverLeaf.certPem, key: serverLeaf.keyPem, ca: ca.pem };
  server = createServer({ ...tls, requestCert: true, rejectUnauthorized: false }, (socket: TLSSocket) => {
    seen.push(readTlsPeer(socket));
    socket.end('ok');
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  port = (server.address() as AddressInfo).port;
});
after(() => new Promise<void>((resolve) => server.close(() => resolve())));

async function handshake(client?: TestLeaf): Promise<TlsPeer> {
  const before = seen.length;
  await new Promise<void>((resolve, reject) => {
    const credentials = client ? { cert: client.certPem, key: client.keyPem } : {};
    const socket = connect({
      host: '127.0.0.1',
      port,
      ca: ca.pem,
      checkServerIdentity: () => undefined,
      ...credentials,
    });
    socket.on('data', () => {});
    socket.once('end', () => {
      socket.destroy();
      resolve();
    });
    socket.once('error', reject);
  });
  const peer = seen[before];
  assert.ok(peer, 'the server saw the connection');
  return peer;
}

describe('readTlsPeer', () => {
  it('gives the leaf DER of a verified peer, which reads as its SVID', async () => {
    const client = await issueLeaf(ca, { uris: ['spiffe://shop.test/svc/gateway'] });
    const peer = await handshake(client);
    assert.deepEqual([peer.authorized, peer.authorizationError], [true, null]);
    assert.deepEqual(peer.leafDer, client.der);
    assert.equal(readX509Svid(peer.leafDer as Uint8Array, { trustDomain: 'shop.test' }).service, 'gateway');
    assert.ok(Object.isFrozen(peer));
  });

  it('says when the peer presented no certificate', async () => {
    const peer = await handshake();
    assert.equal(peer.leafDer, null);
    assert.equal(peer.authorized, false);
  });

  it("gives the DER but not authorized, with OpenSSL's reason, for a certificate of another CA", async () => {
    const client = await issueLeaf(stranger, { uris: ['spiffe://shop.test/svc/gateway'] });
    const peer = await handshake(client);
    assert.deepEqual(peer.leafDer, client.der);
    assert.equal(peer.authorized, false);
    assert.match(String(peer.authorizationError), /^[A-Z_]+$/);
  });

  it('is not authorized for an expired certificate, and says so', async () => {
    const hour = 3_600_000;
    const now = Date.now();
    const client = await issueLeaf(ca, { notBefore: new Date(now - 2 * hour), notAfter: new Date(now - hour) });
    const peer = await handshake(client);
    assert.deepEqual([peer.authorized, peer.authorizationError], [false, 'CERT_HAS_EXPIRED']);
  });

  // Found missing by the mutation run (docs/mutation.md): a refusal may read a socket that is gone.
  it('reads a socket that is already destroyed as one without a certificate, without throwing', async () => {
    const tls = { cert: serverLeaf.certPem, key: serverLeaf.keyPem, ca: ca.pem };
    const read: TlsPeer[] = [];
    const closing = createServer({ ...tls, requestCert: true, rejectUnauthorized: false }, (socket: TLSSocket) => {
      socket.destroy();
      read.push(readTlsPeer(socket));
    });
    await new Promise<void>((resolve) => closing.listen(0, '127.0.0.1', resolve));
    try {
      const client = await issueLeaf(ca, { uris: ['spiffe://shop.test/svc/gateway'] });
      await new Promise<void>((resolve) => {
        const socket = connect({
          host: '127.0.0.1',
          port: (closing.address() as AddressInfo).port,
          ca: ca.pem,
          checkServerIdentity: () => undefined,
          cert: client.certPem,
          key: client.keyPem,
        });
        socket.on('error', () => {});
        socket.once('close', () => resolve());
      });
      assert.equal(read.length, 1, 'the server saw the connection');
      assert.deepEqual([read[0]?.leafDer, read[0]?.authorized], [null, false]);
    } finally {
      await new Promise<void>((resolve) => closing.close(() => resolve()));
    }
  });
});
