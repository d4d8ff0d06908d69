import assert from 'node:assert/strict';
import { once } from 'node:events';
import https from 'node:https';
import type { AddressInfo } from 'node:net';
import type { TLSSocket } from 'node:tls';
import { after, before, describe, it } from 'node:test';
import { createTestCa } from '../ca/create-test-ca.ts';
import type { Svid } from '../ca/issue-svid.ts';
import type { TestCa } from '../ca/create-test-ca.ts';
import { createMtlsClient } from './mtls-client.ts';
import { rawTlsRequest } from './raw-tls-request.ts';

/** Echoes what it received, including every raw header line, to a caller that must present a trusted certificate. */
async function startEchoServer(
  ca: TestCa,
  svid: Svid,
): Promise<{ server: https.Server; origin: string; port: number }> {
  const server = https.createServer(
    { cert: svid.chainPem, key: svid.keyPem, ca: ca.bundlePem, requestCert: true, rejectUnauthorized: true },
    (req, res) => {
      let body = '';
      req.on('data', (chunk) => {
        body += String(chunk);
      });
      req.on('end', () => {
        const rawTxnTokens = req.rawHeaders.filter(
          (_, i) => i % 2 === 1 && req.rawHeaders[i - 1]!.toLowerCase() === 'txn-token',
        );
        const peer = (req.socket as TLSSocket).getPeerX509Certificate();
        res.setHeader('content-type', 'application/json');
        res.end(JSON.stringify({ method: req.method, url: req.url, rawTxnTokens, peer: peer?.subjectAltName, body }));
      });
    },
  );
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const { port } = server.address() as AddressInfo;
  return { server, origin: `https://127.0.0.1:${port}`, port };
}

interface Echo {
  method: string;
  url: string;
  rawTxnTokens: string[];
  peer: string;
  body: string;
}

describe('createMtlsClient and rawTlsRequest against an https server that requires client certificates', () => {
  let ca: TestCa;
  let gateway: Svid;
  let server: https.Server;
  let origin: string;
  let port: number;
  before(async () => {
    ca = await createTestCa({ trustDomain: 'shop.test', intermediate: true });
    gateway = await ca.issueSvid({ service: 'gateway' });
    ({ server, origin, port } = await startEchoServer(ca, await ca.issueSvid({ service: 'orders' })));
  });
  after(() => {
    server.closeAllConnections();
    server.close();
  });

  it('presents the SVID and returns status, headers, text and json()', async () => {
    const client = createMtlsClient({ certPem: gateway.chainPem, keyPem: gateway.keyPem, caPem: ca.bundlePem });
    try {
      const response = await client.request(`${origin}/orders/1?x=1`);
      assert.equal(response.status, 200);
      assert.equal(response.headers['content-type'], 'application/json');
      const echo = response.json<Echo>();
      assert.deepEqual(
        [echo.method, echo.url, echo.peer],
        ['GET', '/orders/1?x=1', 'URI:spiffe://shop.test/svc/gateway'],
      );
      assert.equal(response.text, JSON.stringify(echo));
    } finally {
      await client.close();
    }
  });

  it('sends a flat header array, or a record with an array value, as separate header lines', async () => {
    const client = createMtlsClient({ certPem: gateway.chainPem, keyPem: gateway.keyPem, caPem: ca.bundlePem });
    try {
      const flat = await client.request(origin, { headers: ['txn-token', 'a.b.c', 'txn-token', 'd.e.f'] });
      assert.deepEqual(flat.json<Echo>().rawTxnTokens, ['a.b.c', 'd.e.f']);
      const record = await client.request(origin, { headers: { 'txn-token': ['a.b.c', 'd.e.f'] } });
      assert.deepEqual(record.json<Echo>().rawTxnTokens, ['a.b.c', 'd.e.f']);
      await assert.rejects(client.request(origin, { headers: ['txn-token'] }), TypeError);
    } finally {
      await client.close();
    }
  });

  it('sends a method and a body', async () => {
    const client = createMtlsClient({ certPem: gateway.chainPem, keyPem: gateway.keyPem, caPem: ca.bundlePem });
    try {
      const response = await client.request(`${origin}/orders`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: '{"item":1}',
      });
      assert.deepEqual([response.json<Echo>().method, response.json<Echo>().body], ['POST', '{"item":1}']);
    } finally {
      await client.close();
    }
  });

  it('fails when the server does not trust the client certificate, or the client does not trust the server', async () => {
    const stranger = await (await createTestCa({ trustDomain: 'shop.test' })).issueSvid({ service: 'gateway' });
    const untrusted = createMtlsClient({ certPem: stranger.chainPem, keyPem: stranger.keyPem, caPem: ca.bundlePem });
    const distrustful = createMtlsClient({
      certPem: gateway.chainPem,
      keyPem: gateway.keyPem,
      caPem: (await createTestCa({ trustDomain: 'shop.test' })).bundlePem,
    });
    try {
      await assert.rejects(untrusted.request(origin));
      await assert.rejects(distrustful.request(origin), { code: 'UNABLE_TO_GET_ISSUER_CERT_LOCALLY' });
    } finally {
      await Promise.all([untrusted.close(), distrustful.close()]);
    }
  });

  it('rawTlsRequest: returns the raw response to well-formed and malformed HTTP', async () => {
    const peer = { host: '127.0.0.1', port, certPem: gateway.chainPem, keyPem: gateway.keyPem, caPem: ca.bundlePem };
    const ok = await rawTlsRequest({ ...peer, raw: 'GET /raw HTTP/1.1\r\nHost: orders\r\nConnection: close\r\n\r\n' });
    assert.equal(typeof ok, 'string');
    assert.match(ok as string, /^HTTP\/1\.1 200 OK\r\n[\s\S]*"url":"\/raw"/);
    const malformed = await rawTlsRequest({
      ...peer,
      raw: Buffer.from('GET / HTTP/1.1\r\nHost: orders\r\nBad Header\r\n\r\n'),
    });
    assert.match(malformed as string, /^HTTP\/1\.1 400 Bad Request/);
  });

  it('rawTlsRequest: reports { error } when the handshake or the connection fails', async () => {
    const noCert = await rawTlsRequest({ host: '127.0.0.1', port, caPem: ca.bundlePem, raw: 'GET / HTTP/1.1\r\n\r\n' });
    assert.deepEqual(noCert, { error: 'ERR_SSL_TLSV13_ALERT_CERTIFICATE_REQUIRED' });
    const wrongCa = await rawTlsRequest({
      host: '127.0.0.1',
      port,
      caPem: (await createTestCa({ trustDomain: 'shop.test' })).bundlePem,
      raw: '',
    });
    assert.deepEqual(wrongCa, { error: 'UNABLE_TO_GET_ISSUER_CERT_LOCALLY' });
    const closed = https.createServer().listen(0, '127.0.0.1');
    await once(closed, 'listening');
    const closedPort = (closed.address() as AddressInfo).port;
    closed.close();
    await once(closed, 'close');
    assert.deepEqual(await rawTlsRequest({ host: '127.0.0.1', port: closedPort, caPem: ca.bundlePem, raw: '' }), {
      error: 'ECONNREFUSED',
    });
  });
});
