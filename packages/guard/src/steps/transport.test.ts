/**
 * The transport step on real sockets: a TLS server that asks for a client certificate without
 * requiring one (as the guard's does), a clock the test moves, and certificates of the testkit CA.
 * Written for what the mutation run found untested (docs/mutation.md): expiry during a connection,
 * a connection that is not TLS, and how each X509-SVID refusal maps into the guard's catalogue.
 */
import assert from 'node:assert/strict';
import { X509Certificate } from 'node:crypto';
import { connect as connectTcp, createServer as createTcpServer, type AddressInfo, type Socket } from 'node:net';
import { connect as connectTls, createServer as createTlsServer, type TLSSocket } from 'node:tls';
import { after, before, describe, it } from 'node:test';
import { createTestCa, type IssuedCert, type TestCa } from '@lockstep/testkit';
import { GuardError, type GuardErrorCode } from '../errors.ts';
import { createTransportStep, identityFromCertificate } from './transport.ts';

const TRUST_DOMAIN = 'shop.test';
let ca: TestCa;
let serverCert: IssuedCert;
const open: Socket[] = [];

before(async () => {
  ca = await createTestCa({ trustDomain: TRUST_DOMAIN });
  serverCert = await ca.issueSvid({ service: 'orders' });
});
after(() => {
  for (const socket of open) socket.destroy();
});

function derOf(cert: IssuedCert): Uint8Array {
  return new Uint8Array(new X509Certificate(cert.certPem).raw);
}

function refusedWith(attempt: () => unknown, code: GuardErrorCode, detail: RegExp): void {
  assert.throws(attempt, (error: unknown) => {
    assert.ok(error instanceof GuardError, `a GuardError, not ${String(error)}`);
    assert.equal(error.code, code);
    assert.match(error.detail, detail);
    return true;
  });
}

/** The server's end of a TLS connection from a client presenting `client`; left open until the end. */
async function tlsServerSocket(client: IssuedCert): Promise<TLSSocket> {
  const server = createTlsServer({
    cert: serverCert.chainPem,
    key: serverCert.keyPem,
    ca: ca.bundlePem,
    requestCert: true,
    rejectUnauthorized: false,
  });
  const accepted = new Promise<TLSSocket>((resolve) => server.once('secureConnection', resolve));
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const socket = connectTls({
    host: '127.0.0.1',
    port: (server.address() as AddressInfo).port,
    ca: ca.bundlePem,
    cert: client.chainPem,
    key: client.keyPem,
    checkServerIdentity: () => undefined,
  });
  socket.on('error', () => {});
  const serverSide = await accepted;
  server.close();
  open.push(socket, serverSide);
  return serverSide;
}

describe('transport step: per request, on an open connection', () => {
  it('refuses a certificate from the millisecond its notAfter is reached, on a connection opened before', async () => {
    const clock = { ms: Date.now() };
    const now = () => clock.ms;
    const step = createTransportStep({ trustDomain: TRUST_DOMAIN, isRevokedSpiffeId: () => false, now });
    const socket = await tlsServerSocket(await ca.issueSvid({ service: 'gateway' }));
    const { notAfterMs, spiffeId } = step.identify(socket);
    assert.equal(spiffeId, `spiffe://${TRUST_DOMAIN}/svc/gateway`);
    clock.ms = notAfterMs - 1;
    assert.equal(step.identify(socket).spiffeId, spiffeId, 'still valid one millisecond before notAfter');
    clock.ms = notAfterMs;
    refusedWith(() => step.identify(socket), 'LOCKSTEP_ERR_PEER_UNTRUSTED', /expired during the connection/);
  });

  it('refuses a connection that is not TLS as one without a certificate', async () => {
    const step = createTransportStep({ trustDomain: TRUST_DOMAIN, isRevokedSpiffeId: () => false });
    const server = createTcpServer();
    const accepted = new Promise<Socket>((resolve) => server.once('connection', resolve));
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const client = connectTcp((server.address() as AddressInfo).port, '127.0.0.1');
    const serverSide = await accepted;
    server.close();
    open.push(client, serverSide);
    refusedWith(() => step.identify(serverSide), 'LOCKSTEP_ERR_PEER_CERT_MISSING', /not TLS/);
  });
});

describe('identityFromCertificate', () => {
  it('names the service of a workload, none for other kinds, and flags any path under /scanner/', async () => {
    const cases: Array<[string, string, boolean]> = [
      [`spiffe://${TRUST_DOMAIN}/svc/gateway`, 'gateway', false],
      [`spiffe://${TRUST_DOMAIN}/admin/alice`, '', false],
      [`spiffe://${TRUST_DOMAIN}/scanner/scan-1`, '', true],
      [`spiffe://${TRUST_DOMAIN}/scanner/team/scan-1`, '', true],
      [`spiffe://${TRUST_DOMAIN}/svc/scanner`, 'scanner', false],
    ];
    for (const [uri, service, scanner] of cases) {
      const identity = identityFromCertificate(derOf(await ca.issueCert({ uris: [uri] })), TRUST_DOMAIN);
      assert.deepEqual([identity.spiffeId, identity.service, identity.scanner], [uri, service, scanner], uri);
    }
  });

  it('refuses bytes that are not a certificate as an invalid peer ID', () => {
    refusedWith(
      () => identityFromCertificate(new Uint8Array([0x30, 0x03, 0x02, 0x01, 0x01]), TRUST_DOMAIN),
      'LOCKSTEP_ERR_PEER_ID_INVALID',
      /could not be parsed/,
    );
  });

  it('lets a configuration mistake through as the TypeError it is, not as a refusal of the peer', async () => {
    const der = derOf(await ca.issueSvid({ service: 'gateway' }));
    assert.throws(() => identityFromCertificate(der, 'SHOP.TEST'), /trustDomain must be a trust domain name/);
  });
});
