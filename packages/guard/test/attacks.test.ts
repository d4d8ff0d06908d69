/**
 * The issue's bad-input catalogue, over real mTLS on 127.0.0.1, against every adapter. Each refusal
 * is proven by the fixture's `expectRefused`: the exact status, the code in the body and the
 * `lockstep-error` header, the audit event with that reason code — and no handler call, no change to
 * the service's state. The matching legitimate request succeeds (and does reach its handler).
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { connect } from 'node:net';
import tls, { type TLSSocket } from 'node:tls';
import {
  revokedKidToken,
  rawTlsRequest,
  txnTokenAttacks,
  type MtlsClient,
  type TxnTokenRejection,
} from '@lockstep/testkit';
import type { GuardErrorCode } from '../src/index.ts';
import {
  adapters,
  expectRefused,
  guardFor,
  parseRawAnswer,
  recordDecisions,
  settle,
  startOrders,
  TRUST_DOMAIN,
  world,
  type Answer,
  type RunningService,
  type World,
} from './fixture.ts';

type Cert = { chainPem: string; keyPem: string } | null;

const GATEWAY = `spiffe://${TRUST_DOMAIN}/svc/gateway`;
const expectedCode: Record<TxnTokenRejection, [number, GuardErrorCode]> = {
  invalid: [401, 'LOCKSTEP_ERR_TXN_TOKEN_INVALID'],
  expired: [401, 'LOCKSTEP_ERR_TXN_TOKEN_EXPIRED'],
  claims: [401, 'LOCKSTEP_ERR_TXN_TOKEN_CLAIMS'],
  malformed: [401, 'LOCKSTEP_ERR_TXN_TOKEN_MALFORMED'],
  missing: [401, 'LOCKSTEP_ERR_TXN_TOKEN_MISSING'],
  duplicate: [401, 'LOCKSTEP_ERR_TXN_TOKEN_DUPLICATE'],
  revoked: [401, 'LOCKSTEP_ERR_TXN_TOKEN_REVOKED'],
  'too-large': [431, 'LOCKSTEP_ERR_HEADERS_TOO_LARGE'],
};

for (const adapter of adapters) {
  describe(`${adapter} adapter`, () => {
    let w: World;
    let service: RunningService;
    let gateway: MtlsClient;
    let token: string;
    const decisions = recordDecisions();

    before(async () => {
      w = await world();
      const revoked = await revokedKidToken(w.minter);
      const guard = await guardFor(w, {
        txnTokenKeys: { jwks: { keys: [...w.minter.jwks.keys, ...revoked.jwks.keys] } },
      });
      guard.revoke({ kind: 'kid', value: revoked.kid });
      service = await startOrders(adapter, guard);
      gateway = w.client(w.svids.gateway);
      token = await w.customerToken();
    });
    after(async () => {
      decisions.stop();
      await gateway.close();
      await service.close();
      await service.guard.close();
    });

    /** The pipeline's refusal and nothing else (fixture's expectRefused); no token in its audit event. */
    async function refused(send: () => Promise<Answer>, status: number, code: GuardErrorCode): Promise<void> {
      const { event } = await expectRefused(service, decisions, send, status, code);
      assert.ok(!JSON.stringify(event).includes(token.slice(-20)), 'the audit event never carries a token');
    }

    /** A GET by a caller with `cert` (and no Txn-Token unless `headers` has one) that must be refused. */
    function refusedAs(
      cert: Cert,
      status: number,
      code: GuardErrorCode,
      path?: string,
      headers?: Record<string, string>,
    ): Promise<void> {
      return refused(() => asClient(cert, path, headers), status, code);
    }

    async function asClient(cert: Cert, path = '/orders/7', headers?: Record<string, string>): Promise<Answer> {
      headers ??= { 'txn-token': token };
      const head = Object.entries(headers)
        .map(([name, value]) => `${name}: ${value}\r\n`)
        .join('');
      const raw = `GET ${path} HTTP/1.1\r\nhost: orders\r\n${head}connection: close\r\n\r\n`;
      const result = await rawTlsRequest({
        host: '127.0.0.1',
        port: service.port,
        caPem: w.ca.bundlePem,
        raw,
        ...(cert ? { certPem: cert.chainPem, keyPem: cert.keyPem } : {}),
      });
      if (typeof result !== 'string') throw new Error(`connection failed: ${result.error}`);
      return parseRawAnswer(result);
    }

    const hoursFromNow = (hours: number) => new Date(Date.now() + hours * 3_600_000);

    describe('transport', () => {
      test('legitimate: the gateway SVID is accepted, and the handler runs (the call log works)', async () => {
        const calls = service.calls.length;
        assert.equal((await asClient(w.svids.gateway)).status, 200);
        assert.equal(service.calls.length, calls + 1);
      });
      test('no client certificate', async () => {
        await refusedAs(null, 401, 'LOCKSTEP_ERR_PEER_CERT_MISSING');
      });
      test('certificate from a foreign CA', async () => {
        await refusedAs(await w.foreignCa.issueSvid({ service: 'gateway' }), 401, 'LOCKSTEP_ERR_PEER_UNTRUSTED');
      });
      test('expired certificate', async () => {
        const expired = await w.ca.issueCert({
          uris: [GATEWAY],
          notBefore: hoursFromNow(-2),
          notAfter: hoursFromNow(-1),
        });
        await refusedAs(expired, 401, 'LOCKSTEP_ERR_PEER_UNTRUSTED');
      });
      test('not-yet-valid certificate', async () => {
        const notYet = await w.ca.issueCert({ uris: [GATEWAY], notBefore: hoursFromNow(1), notAfter: hoursFromNow(2) });
        await refusedAs(notYet, 401, 'LOCKSTEP_ERR_PEER_UNTRUSTED');
      });
      test('two URI SANs', async () => {
        const twoSans = await w.ca.issueCert({ uris: [GATEWAY, `spiffe://${TRUST_DOMAIN}/svc/reports`] });
        await refusedAs(twoSans, 401, 'LOCKSTEP_ERR_PEER_ID_INVALID');
      });
      test('no URI SAN (DNS name only)', async () => {
        await refusedAs(await w.ca.issueCert({ dnsNames: ['gateway.shop.test'] }), 401, 'LOCKSTEP_ERR_PEER_ID_INVALID');
      });
      test('no SAN extension at all', async () => {
        await refusedAs(await w.ca.issueCert({ uris: [GATEWAY], noSan: true }), 401, 'LOCKSTEP_ERR_PEER_ID_INVALID');
      });
      for (const [label, uri] of [
        ['trust domain with a suffix', 'spiffe://shop.test.evil/svc/gateway'],
        ['trust domain with a prefix', 'spiffe://evilshop.test/svc/gateway'],
      ] as const) {
        test(`lookalike ${label}: ${uri}`, async () => {
          await refusedAs(await w.ca.issueCert({ uris: [uri] }), 401, 'LOCKSTEP_ERR_PEER_FOREIGN_TRUST_DOMAIN');
        });
      }
      for (const uri of [
        'spiffe://shop%2etest/svc/gateway',
        'spiffe://SHOP.TEST/svc/gateway',
        'SPIFFE://shop.test/svc/gateway',
        'spiffe://shop.test/svc/../svc/gateway',
        'spiffe://user@shop.test/svc/gateway',
        'spiffe://shop.test:443/svc/gateway',
      ]) {
        test(`malformed or encoded SPIFFE ID: ${uri}`, async () => {
          await refusedAs(await w.ca.issueCert({ uris: [uri] }), 401, 'LOCKSTEP_ERR_PEER_ID_INVALID');
        });
      }
      test('a CA certificate presented as the leaf', async () => {
        await refusedAs(await w.ca.issueCert({ uris: [GATEWAY], ca: true }), 401, 'LOCKSTEP_ERR_PEER_ID_INVALID');
      });
      test('plain HTTP to the TLS port gets no HTTP answer and is audited', async () => {
        const before = decisions.events.length;
        const calls = service.calls.length;
        const reply = await new Promise<string>((resolve) => {
          const socket = connect(service.port, '127.0.0.1', () =>
            socket.write(`GET /orders/7 HTTP/1.1\r\nhost: orders\r\ntxn-token: ${token}\r\n\r\n`),
          );
          let data = '';
          socket.on('data', (chunk) => {
            data += chunk.toString('latin1');
          });
          socket.on('close', () => resolve(data));
          socket.on('error', () => {});
        });
        assert.ok(!reply.startsWith('HTTP/'), 'no HTTP response over plain text');
        await waitFor(() =>
          decisions.events.slice(before).some((event) => event.reason === 'LOCKSTEP_ERR_TLS_HANDSHAKE'),
        );
        await settle();
        assert.equal(service.calls.length, calls, 'no handler ran');
      });
    });

    describe('Txn-Token', () => {
      test('legitimate: a valid Txn-Token is accepted', async () => {
        assert.equal(
          (await gateway.request(`${service.url}/orders/7`, { headers: { 'txn-token': token } })).status,
          200,
        );
      });
      for (const attack of txnTokenAttacks) {
        test(`${attack.id}: ${attack.description}`, async () => {
          const built = await attack.build(w.minter);
          const values = Array.isArray(built) ? built : [built];
          const headers = values.flatMap((value) => ['txn-token', value]);
          const [status, code] = expectedCode[attack.expect];
          await refused(
            async () => {
              try {
                return await gateway.request(`${service.url}/orders/7`, { headers });
              } catch (error) {
                // A 1 MB header: the server answers 431 and closes while the client is still writing.
                if (attack.expect !== 'too-large') throw error;
                return asClient(w.svids.gateway, '/orders/7', { 'txn-token': values[0] as string });
              }
            },
            status,
            code,
          );
        });
      }
    });

    describe('authorization', () => {
      test('lateral movement: a valid SVID of a service the policy does not allow', async () => {
        await refusedAs(w.svids.reports, 403, 'LOCKSTEP_ERR_DENIED');
      });
      test('allowed service, but the user lacks the required role', async () => {
        const noRole = await w.customerToken({ tctx: { roles: ['guest'] } });
        await refusedAs(w.svids.gateway, 403, 'LOCKSTEP_ERR_DENIED', '/orders/7', { 'txn-token': noRole });
      });
      test('method switching: GET allowed, DELETE denied for a customer; allowed for an admin', async () => {
        assert.equal(
          (await gateway.request(`${service.url}/orders/7`, { headers: { 'txn-token': token } })).status,
          200,
        );
        const id = await placeOrder();
        const remove = (as: string) => {
          return gateway.request(`${service.url}/orders/${id}`, { method: 'DELETE', headers: { 'txn-token': as } });
        };
        await refused(() => remove(token), 403, 'LOCKSTEP_ERR_DENIED');
        assert.ok(service.orders.has(id), 'the order is still there');
        const admin = await w.customerToken({ tctx: { roles: ['admin'] } });
        assert.equal((await remove(admin)).status, 200);
        assert.ok(!service.orders.has(id), 'the admin deleted it');
      });
      test('a route the guard was never told about is unreachable, even with a handler', async () => {
        const debug = () => asClient(w.svids.gateway, '/internal/debug');
        const { answer } = await expectRefused(service, decisions, debug, 404, 'LOCKSTEP_ERR_ROUTE_UNKNOWN');
        assert.ok(!answer.text.includes('secret'));
      });
      test('a route without a permitting policy is denied', async () => {
        await refusedAs(w.svids.gateway, 403, 'LOCKSTEP_ERR_DENIED', '/admin/stats');
      });
      for (const path of [
        '/admin/stats/',
        '/ADMIN/stats',
        '/Admin/Stats',
        '/orders/%2e%2e/admin/stats',
        '/orders/7/../../admin/stats',
        '//admin/stats',
        '/admin//stats',
        '/%61dmin/stats',
        '/admin/stats%2f',
        '/admin/stats;x=1',
        '/admin/stats?x=/orders/7',
      ]) {
        test(`path trick never reaches an unauthorized action: ${path}`, async () => {
          // Which of the two depends on the adapter's router (Express is not strict about a trailing
          // slash, for one); either way it is the pipeline's refusal and the handler never runs.
          const first = await asClient(w.svids.gateway, path);
          assert.ok(!first.text.includes('secret'), `reached the admin handler via ${path}`);
          assert.ok(first.status === 404 || first.status === 403, `${path} answered ${first.status}: ${first.text}`);
          if (first.status === 404) await refusedAs(w.svids.gateway, 404, 'LOCKSTEP_ERR_ROUTE_UNKNOWN', path);
          else await refusedAs(w.svids.gateway, 403, 'LOCKSTEP_ERR_DENIED', path);
        });
      }
      test('public route needs no credentials, and is audited as public', async () => {
        const calls = service.calls.length;
        const answer = await asClient(null, '/health', {});
        assert.equal(answer.status, 200);
        assert.equal(service.calls.length, calls + 1, 'the health handler ran');
        await waitFor(() =>
          decisions.events.some((event) => event.route === '/health' && event.reason === 'LOCKSTEP_ALLOW_PUBLIC'),
        );
      });
    });

    describe('input', () => {
      const json = { 'content-type': 'application/json' };
      type Headers = Record<string, string>;
      const send = (method: 'POST' | 'GET' | 'DELETE', path: string, body: string | Buffer, headers: Headers = {}) => {
        const all = { 'txn-token': token, ...json, ...headers };
        return gateway.request(`${service.url}${path}`, { method, body, headers: all });
      };
      const post = (body: string | Buffer, headers: Headers = {}) => send('POST', '/orders', body, headers);
      const refusedInput = (body: string) => refused(() => post(body), 400, 'LOCKSTEP_ERR_INPUT_INVALID');

      test('legitimate: a valid order is accepted, and it is stored', async () => {
        const orders = service.orders.size;
        const answer = await post(JSON.stringify({ item: 'tea', quantity: 2, meta: { note: 'by the door' } }));
        assert.equal(answer.status, 200, answer.text);
        const expected = { item: 'tea', quantity: 2, meta: { note: 'by the door' } };
        assert.deepEqual(answer.json<{ body: unknown }>().body, expected);
        assert.equal(service.orders.size, orders + 1);
      });
      test('body failing the schema', async () => {
        await refusedInput(JSON.stringify({ item: 'tea', quantity: 'lots' }));
      });
      test('unknown field where the schema forbids it', async () => {
        await refusedInput(JSON.stringify({ item: 'tea', quantity: 2, price: 0 }));
      });
      test('body that is not JSON', async () => {
        await refusedInput('{"item": "tea",');
      });
      test('prototype pollution attempt', async () => {
        await refusedInput('{"item":"tea","quantity":2,"__proto__":{"admin":true}}');
      });
      // Each of these bodies passes the route's schema once a lenient parser is done with it, so only
      // the strict parser (or, for "1", the absence of coercion) stands between it and the handler.
      for (const [label, body] of [
        ['duplicate key: the last one would win', '{"item":"tea","quantity":1,"quantity":100}'],
        ['duplicate key, spelled with an escape', '{"item":"tea","quantity":1,"qu\\u0061ntity":100}'],
        ['duplicate key inside a nested object', '{"item":"tea","quantity":1,"meta":{"gift":false,"gift":true}}'],
        ['__proto__ inside a nested object', '{"item":"tea","quantity":1,"meta":{"__proto__":{"admin":true}}}'],
        [
          'constructor.prototype inside a nested object',
          '{"item":"tea","quantity":1,"meta":{"constructor":{"prototype":{"admin":true}}}}',
        ],
        ['prototype deep inside arrays', '{"item":"tea","quantity":1,"meta":{"list":[{"x":[{"prototype":1}]}]}}'],
        ['escaped NUL in a string', '{"item":"te\\u0000a","quantity":1}'],
        ['escaped escape character in a key', '{"item":"tea","quantity":1,"meta":{"a\\u001b[2J":1}}'],
        ['a lone surrogate', '{"item":"te\\ud800a","quantity":1}'],
        ['a number sent as a string (no type coercion)', '{"item":"tea","quantity":"1"}'],
        ['a byte order mark before the JSON', '\ufeff{"item":"tea","quantity":1}'],
      ] as const) {
        test(`strict body: ${label}`, async () => {
          await refusedInput(body);
        });
      }
      test('strict body: bytes that are not UTF-8', async () => {
        const body = Buffer.from([...Buffer.from('{"item":"te'), 0xff, 0xfe, ...Buffer.from('a","quantity":1}')]);
        await refused(() => post(body), 400, 'LOCKSTEP_ERR_INPUT_INVALID');
      });
      test('a body on a route without a body schema is refused, not ignored or handed on unread', async () => {
        await refused(() => send('GET', '/orders/7', '{"x":1}'), 400, 'LOCKSTEP_ERR_INPUT_INVALID');
        const id = await placeOrder();
        const admin = await w.customerToken({ tctx: { roles: ['admin'] } });
        const withBody = () => send('DELETE', `/orders/${id}`, '{"cascade":true}', { 'txn-token': admin });
        await refused(withBody, 400, 'LOCKSTEP_ERR_INPUT_INVALID');
        assert.ok(service.orders.has(id), 'the order is still there');
      });
      test('oversized body', async () => {
        const big = JSON.stringify({ item: 'x'.repeat(2 * 1024 * 1024), quantity: 1 });
        await refused(() => post(big), 413, 'LOCKSTEP_ERR_BODY_TOO_LARGE');
      });
      test('wrong content type', async () => {
        const bodies = [
          ['item=tea&quantity=2', 'application/x-www-form-urlencoded'],
          ['tea', 'text/plain'],
          ['{"item":"tea"}', ''],
        ] as const;
        for (const [body, type] of bodies) {
          await refused(() => post(body, { 'content-type': type }), 415, 'LOCKSTEP_ERR_UNSUPPORTED_MEDIA_TYPE');
        }
      });
      test('oversized headers', async () => {
        const headers = { 'txn-token': token, 'x-padding': 'p'.repeat(32 * 1024) };
        await refusedAs(w.svids.gateway, 431, 'LOCKSTEP_ERR_HEADERS_TOO_LARGE', '/orders/7', headers);
      });

      const FIVE_MB = 5 * 1024 * 1024;
      /** Sends a streamed POST /orders that must be refused; what the server did with the body. */
      async function refusedStream(cert: Cert, head: string, body: StreamedBody, status: number, code: GuardErrorCode) {
        let sent: Streamed | undefined;
        await refused(async () => (sent = await streamBody(service, w, cert, head, body)).answer, status, code);
        assert.ok(sent);
        return sent;
      }
      test('an unauthenticated oversized body (5 MB) is refused before it is read; the connection closes', async () => {
        const head = postHead(`content-length: ${FIVE_MB}`);
        const body = { size: FIVE_MB };
        const sent = await refusedStream(w.svids.reports, head, body, 401, 'LOCKSTEP_ERR_TXN_TOKEN_MISSING');
        assert.ok(sent.answeredAfterMs < 2_000, `answered after ${sent.answeredAfterMs} ms`);
        assert.ok(sent.closedAfterMs !== null && sent.closedAfterMs < 2_000, 'the server closed the connection');
        assert.ok(sent.serverBytesRead < 1024 * 1024, `the server read ${sent.serverBytesRead} bytes of ${FIVE_MB}`);
      });
      test('an endless chunked body without a certificate is refused at once; the connection closes', async () => {
        const head = postHead('transfer-encoding: chunked');
        const body = { chunk: 1024, everyMs: 20 };
        const sent = await refusedStream(null, head, body, 401, 'LOCKSTEP_ERR_PEER_CERT_MISSING');
        assert.ok(sent.answeredAfterMs < 2_000, `answered after ${sent.answeredAfterMs} ms`);
        assert.ok(sent.closedAfterMs !== null && sent.closedAfterMs < 2_000, 'the server closed, not reading on');
        assert.ok(sent.serverBytesRead < 256 * 1024, `the server read ${sent.serverBytesRead} bytes`);
      });
      test('an endless chunked body from an authorized caller is cut off at the limit, connection closed', async () => {
        const head = postHead('transfer-encoding: chunked', `txn-token: ${token}`);
        const body = { chunk: 64 * 1024, everyMs: 5 };
        const sent = await refusedStream(w.svids.gateway, head, body, 413, 'LOCKSTEP_ERR_BODY_TOO_LARGE');
        assert.ok(sent.closedAfterMs !== null, 'the server closed the connection');
        assert.ok(sent.serverBytesRead < 3 * 1024 * 1024, `the server read ${sent.serverBytesRead} bytes`);
      });
      test('Expect: 100-continue — no 100 Continue before the request is authorized; one after', async () => {
        const length = `content-length: ${'{"item":"tea","quantity":1}'.length}`;
        const peer = { host: '127.0.0.1', port: service.port, caPem: w.ca.bundlePem, idleTimeoutMs: 500 };
        const outsider = await rawTlsRequest({ ...peer, raw: postHead(length, 'expect: 100-continue') });
        assert.match(String(outsider), /^HTTP\/1\.1 401 /, 'the first answer is the refusal, not 100 Continue');
        const { chainPem: certPem, keyPem } = w.svids.gateway;
        const raw = postHead(length, 'expect: 100-continue', `txn-token: ${token}`);
        const admitted = await rawTlsRequest({ ...peer, certPem, keyPem, raw });
        assert.match(String(admitted), /^HTTP\/1\.1 100 Continue\r\n\r\n$/, 'admitted: the client may send the body');
      });
    });

    /** Places an order as the customer and returns its id (the service's state, read back). */
    async function placeOrder(): Promise<string> {
      const before = new Set(service.orders.keys());
      const headers = { 'txn-token': token, 'content-type': 'application/json' };
      const body = '{"item":"tea","quantity":1}';
      const answer = await gateway.request(`${service.url}/orders`, { method: 'POST', body, headers });
      assert.equal(answer.status, 200, answer.text);
      const id = [...service.orders.keys()].find((key) => !before.has(key));
      assert.ok(id !== undefined, 'the order was stored');
      return id;
    }
  });
}

/** The head of a POST /orders with `lines` added (no Txn-Token unless given). */
function postHead(...lines: string[]): string {
  return ['POST /orders HTTP/1.1', 'host: orders', 'content-type: application/json', ...lines, '', ''].join('\r\n');
}

interface Streamed {
  answer: Answer;
  answeredAfterMs: number;
  /** When the server closed the connection, or null if it was still open after 5 s. */
  closedAfterMs: number | null;
  /** What the server read from this connection, TLS records included. */
  serverBytesRead: number;
}

/**
 * Writes `head`, then a body: `size` bytes as fast as the server takes them, or one chunk of a
 * chunked body every `everyMs` for ever — until the server closes the connection (or 5 s pass).
 */
type StreamedBody = { size: number } | { chunk: number; everyMs: number };

function streamBody(
  service: RunningService,
  w: World,
  cert: Cert,
  head: string,
  body: StreamedBody,
): Promise<Streamed> {
  const accepted: TLSSocket[] = [];
  const onConnection = (socket: TLSSocket) => accepted.push(socket);
  service.server.on('secureConnection', onConnection);
  return new Promise((resolve) => {
    const started = Date.now();
    const received: Buffer[] = [];
    let answeredAfterMs = -1;
    let timer: NodeJS.Timeout | undefined;
    const credentials = cert ? { cert: cert.chainPem, key: cert.keyPem } : {};
    const peer = { host: '127.0.0.1', port: service.port, ca: w.ca.bundlePem, checkServerIdentity: () => undefined };
    const socket = tls.connect({ ...peer, ...credentials });
    let done = false;
    const finish = (closed: boolean) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      clearTimeout(deadline);
      socket.destroy();
      service.server.off('secureConnection', onConnection);
      const server = accepted.find((candidate) => candidate.remotePort === socket.localPort);
      resolve({
        answer: parseRawAnswer(Buffer.concat(received).toString('latin1')),
        answeredAfterMs,
        closedAfterMs: closed ? Date.now() - started : null,
        serverBytesRead: server?.bytesRead ?? Number.NaN,
      });
    };
    const deadline = setTimeout(() => finish(false), 5_000);
    socket.on('secureConnect', () => {
      socket.write(head);
      if ('size' in body) {
        let written = 0;
        const block = Buffer.alloc(64 * 1024, 0x61);
        const pump = () => {
          while (written < body.size && !socket.destroyed) {
            written += block.length;
            if (!socket.write(block)) return void socket.once('drain', pump);
          }
        };
        pump();
      } else {
        const piece = Buffer.alloc(body.chunk, 0x61);
        const next = () => {
          if (socket.destroyed) return;
          socket.write(`${piece.length.toString(16)}\r\n`);
          socket.write(piece);
          socket.write('\r\n');
          timer = setTimeout(next, body.everyMs);
        };
        next();
      }
    });
    socket.on('data', (chunk: Buffer) => {
      if (answeredAfterMs < 0) answeredAfterMs = Date.now() - started;
      received.push(chunk);
    });
    socket.on('error', () => {});
    socket.on('close', () => finish(true));
  });
}

async function waitFor(condition: () => boolean, timeoutMs = 2_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!condition()) {
    if (Date.now() > deadline) assert.fail('condition not met in time');
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}
