/**
 * Nothing leaves a guarded server that the pipeline did not decide. A table of methods × paths
 * (declared, undeclared, a declared path with another method, a trailing slash, encoded and
 * undecodable escapes, an over-long parameter, the asterisk form) × bodies × callers (no certificate,
 * a foreign CA's certificate, a valid certificate without a Txn-Token), on every adapter, over real
 * mTLS: every answer is a refusal in the catalogue's words with its audit event, or a declared public
 * route's own answer; no other handler runs. Then what frameworks and Node answer on their own —
 * OPTIONS, HEAD, 404, bad URLs, CONNECT, Expect, a missing Host, requests the parser refuses —
 * each decided and audited by the pipeline.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { rawTlsRequest } from '@lockstep/testkit';
import type { GuardErrorCode } from '../src/index.ts';
import { ERROR_HEADER, REQUEST_ID_HEADER, statusOf } from '../src/errors.ts';
import {
  adapters,
  expectRefused,
  guardFor,
  parseRawAnswer,
  recordDecisions,
  settle,
  startOrders,
  world,
  type Answer,
  type RunningService,
  type World,
} from './fixture.ts';

type Cert = { chainPem: string; keyPem: string } | null;

const METHODS = ['GET', 'HEAD', 'POST', 'PUT', 'PATCH', 'DELETE', 'OPTIONS', 'TRACE', 'PROPFIND', 'CONNECT'] as const;
const LONG_PARAM = `/orders/${'x'.repeat(200)}`;
const PATHS = [
  '/orders/7',
  '/orders',
  '/health',
  '/nope',
  '/internal/debug', // declared, with other methods, public, undeclared
  '/orders/7/',
  '/orders/%37',
  '/%6frders/7',
  '/orders/%zz',
  LONG_PARAM,
  '*', // slash, escapes, router limits, asterisk
] as const;
/** Declared public routes: the only requests a caller without credentials gets through (and their handler runs). */
const PUBLIC = new Set(['GET /health', 'HEAD /health', 'OPTIONS /orders']);
const BODY = '{"a":1}';
const CALLERS = ['no certificate', "a foreign CA's certificate", 'a valid certificate without a Txn-Token'] as const;

function rawRequest(method: string, target: string, lines: readonly string[] = [], body = ''): string {
  const framing = body === '' ? [] : ['content-type: application/json', `content-length: ${Buffer.byteLength(body)}`];
  const head = [`${method} ${target} HTTP/1.1`, 'host: orders', ...lines, ...framing, 'connection: close'];
  return `${head.join('\r\n')}\r\n\r\n${body}`;
}

for (const adapter of adapters) {
  describe(`${adapter}: every answer is the pipeline's`, () => {
    let w: World;
    let service: RunningService;
    let token: string;
    let callers: Array<{ cert: Cert; code: GuardErrorCode }>;
    const decisions = recordDecisions();

    before(async () => {
      w = await world();
      service = await startOrders(adapter, await guardFor(w));
      token = await w.customerToken();
      // In the order of CALLERS.
      callers = [
        { cert: null, code: 'LOCKSTEP_ERR_PEER_CERT_MISSING' },
        { cert: await w.foreignCa.issueSvid({ service: 'gateway' }), code: 'LOCKSTEP_ERR_PEER_UNTRUSTED' },
        { cert: w.svids.gateway, code: 'LOCKSTEP_ERR_TXN_TOKEN_MISSING' },
      ];
    });
    after(async () => {
      decisions.stop();
      await service.close();
      await service.guard.close();
    });

    async function send(cert: Cert, raw: string): Promise<Answer> {
      const credentials = cert ? { certPem: cert.chainPem, keyPem: cert.keyPem } : {};
      const { port } = service;
      const result = await rawTlsRequest({ host: '127.0.0.1', port, caPem: w.ca.bundlePem, raw, ...credentials });
      if (typeof result !== 'string') throw new Error(`no HTTP answer: ${result.error}`);
      return parseRawAnswer(result);
    }

    /** The fixture's full proof of a refusal (no handler, no state change) for a raw request. */
    function refused(cert: Cert, raw: string, status: number, code: GuardErrorCode, head = false) {
      return expectRefused(service, decisions, () => send(cert, raw), status, code, { head });
    }

    /** A refusal in the catalogue's words with its audit event (the handler check is per table). */
    function assertRefusal(answer: Answer, code: GuardErrorCode, head: boolean, what: string): void {
      const got = `${answer.status} ${String(answer.headers[ERROR_HEADER] ?? '-')} ${answer.text.slice(0, 99)}`;
      const where = `${what}: got ${got}`;
      assert.equal(answer.status, statusOf(code), where);
      assert.equal(answer.headers[ERROR_HEADER], code, where);
      const requestId = String(answer.headers[REQUEST_ID_HEADER] ?? '');
      if (head) assert.equal(answer.text, '', `${what}: a HEAD answer has no body`);
      else assert.deepEqual(JSON.parse(answer.text), { error: code, requestId }, where);
      const event = decisions.byRequestId(requestId);
      assert.ok(event, `${what}: an audit event for ${requestId}`);
      assert.equal(event.reason, code, where);
      assert.equal(event.decision, 'deny', where);
    }

    for (const [index, label] of CALLERS.entries()) {
      for (const method of METHODS) {
        test(`${method} × every path, with and without a body — ${label}`, async () => {
          const caller = callers[index] as (typeof callers)[number];
          const calls = service.calls.length;
          let expectedCalls = 0;
          // CONNECT names an authority, not a path; Node hands it to the 'connect' event.
          const targets: readonly string[] = method === 'CONNECT' ? ['127.0.0.1:443'] : PATHS;
          for (const target of targets) {
            for (const body of method === 'CONNECT' ? [''] : ['', BODY]) {
              const what = `${method} ${target.slice(0, 40)}${body === '' ? '' : ' with a body'}`;
              const answer = await send(caller.cert, rawRequest(method, target, [], body));
              if (PUBLIC.has(`${method} ${target}`)) {
                // A public route's own answer — unless it carries a body it has no schema for.
                if (body !== '') assertRefusal(answer, 'LOCKSTEP_ERR_INPUT_INVALID', method === 'HEAD', what);
                else {
                  assert.ok(answer.status === 200 || answer.status === 204, `${what}: ${answer.status}`);
                  assert.equal(answer.headers[ERROR_HEADER], undefined);
                  expectedCalls++;
                }
              } else {
                assertRefusal(answer, caller.code, method === 'HEAD', what);
              }
            }
          }
          await settle();
          const ran = JSON.stringify(service.calls.slice(calls));
          assert.equal(service.calls.length - calls, expectedCalls, `handlers that ran: ${ran}`);
        });
      }
    }

    describe('with a valid Txn-Token: what a framework would answer itself is a 404 of the pipeline', () => {
      const cases: Array<[string, string]> = [
        ['OPTIONS', '/orders/7'],
        ['OPTIONS', '/health'],
        ['OPTIONS', '*'],
        ['TRACE', '/orders/7'],
        ['PUT', '/orders/7'],
        ['PROPFIND', '/orders'],
        ['GET', '/nope'],
        ['HEAD', '/nope'],
        ['GET', '/internal/debug'],
        ['GET', '/orders/%zz'],
        ['POST', '/orders/7'],
        ['CONNECT', '127.0.0.1:443'],
      ];
      for (const [method, target] of cases) {
        test(`${method} ${target}`, async () => {
          const raw = rawRequest(method, target, [`txn-token: ${token}`]);
          await refused(w.svids.gateway, raw, 404, 'LOCKSTEP_ERR_ROUTE_UNKNOWN', method === 'HEAD');
        });
      }
      const noLimit = 'Express has no parameter length limit: the route matches and is decided as GET /orders/:id';
      const skip = adapter === 'express' ? noLimit : false;
      test("a parameter over the router's maxParamLength is a route the guard does not know", { skip }, async () => {
        const raw = rawRequest('GET', LONG_PARAM, [`txn-token: ${token}`]);
        await refused(w.svids.gateway, raw, 404, 'LOCKSTEP_ERR_ROUTE_UNKNOWN');
      });
    });

    describe('HEAD is decided as the GET route, with HEAD semantics', () => {
      test("an allowed HEAD: the GET route's action, audited with method HEAD, no body", async () => {
        const before = decisions.events.length;
        const answer = await send(w.svids.gateway, rawRequest('HEAD', '/orders/7', [`txn-token: ${token}`]));
        assert.equal(answer.status, 200);
        assert.equal(answer.text, '');
        const event = decisions.events.slice(before).find((candidate) => candidate.decision === 'allow');
        assert.ok(event);
        assert.equal(event.method, 'HEAD');
        assert.equal(event.route, '/orders/:id');
        assert.equal(event.action, 'orders:read');
      });
      test("a denied HEAD: the GET route's denial, no body", async () => {
        const raw = rawRequest('HEAD', '/admin/stats', [`txn-token: ${token}`]);
        const { event } = await refused(w.svids.gateway, raw, 403, 'LOCKSTEP_ERR_DENIED', true);
        assert.equal(event.method, 'HEAD');
        assert.equal(event.route, '/admin/stats');
      });
      test("a HEAD route in the registry (Fastify's, for a GET route) carries the GET route's action", () => {
        const { routes } = service.guard.status();
        const heads = routes.filter((route) => route.method === 'HEAD');
        if (adapter === 'fastify') assert.ok(heads.some((route) => route.template === '/orders/:id'));
        for (const head of heads) {
          const get = routes.find((route) => route.method === 'GET' && route.template === head.template);
          assert.equal(head.action, get?.action, head.template);
        }
      });
    });

    describe("an app's own OPTIONS handling is a declared route like any other", () => {
      test('declared public: answered by the app, audited as public', async () => {
        const before = decisions.events.length;
        const answer = await send(null, rawRequest('OPTIONS', '/orders'));
        assert.equal(answer.status, 204);
        assert.equal(answer.headers.allow, 'POST, OPTIONS');
        const events = decisions.events.slice(before);
        const decided = events.find((event) => event.method === 'OPTIONS' && event.route === '/orders');
        assert.equal(decided?.reason, 'LOCKSTEP_ALLOW_PUBLIC');
      });
    });

    describe('what Node would answer by itself', () => {
      test('CONNECT is decided like a request for no route (401 without credentials)', async () => {
        await refused(null, rawRequest('CONNECT', '127.0.0.1:443'), 401, 'LOCKSTEP_ERR_PEER_CERT_MISSING');
      });
      test('Expect: 100-continue from an outsider gets the refusal, never 100 Continue', async () => {
        const lines = ['expect: 100-continue', 'content-type: application/json', 'content-length: 7'];
        const raw = rawRequest('POST', '/orders', lines);
        const { answer } = await refused(null, raw, 401, 'LOCKSTEP_ERR_PEER_CERT_MISSING');
        assert.ok(!answer.text.includes('100 Continue'));
      });
      test('an Expect Node does not know is not answered 417 by Node: the pipeline decides', async () => {
        const expect = 'expect: something-else';
        await refused(w.svids.gateway, rawRequest('GET', '/orders/7', [expect]), 401, 'LOCKSTEP_ERR_TXN_TOKEN_MISSING');
        const allowed = await send(w.svids.gateway, rawRequest('GET', '/orders/7', [expect, `txn-token: ${token}`]));
        assert.equal(allowed.status, 200);
      });
      test("HTTP/1.1 without Host: 401 for an outsider, 400 once authenticated (not Node's bare 400)", async () => {
        const noHost = (path: string, lines: string[]) => [`GET ${path} HTTP/1.1`, ...lines, '', ''].join('\r\n');
        await refused(null, noHost('/orders/7', []), 401, 'LOCKSTEP_ERR_PEER_CERT_MISSING');
        await refused(w.svids.gateway, noHost('/orders/7', [`txn-token: ${token}`]), 400, 'LOCKSTEP_ERR_INPUT_INVALID');
        await refused(null, noHost('/health', []), 400, 'LOCKSTEP_ERR_INPUT_INVALID');
      });
      test('a protocol upgrade is an ordinary request to the pipeline', async () => {
        const raw = rawRequest('GET', '/orders/7', ['upgrade: websocket', 'connection: upgrade']);
        await refused(null, raw, 401, 'LOCKSTEP_ERR_PEER_CERT_MISSING');
      });
      const invalid = [400, 'LOCKSTEP_ERR_INPUT_INVALID'] as const;
      const head = (line: string, ...headers: string[]) => {
        return [`${line} HTTP/1.1`, 'host: orders', ...headers, '', ''].join('\r\n');
      };
      const padding = `x-padding: ${'p'.repeat(32 * 1024)}`;
      for (const [label, raw, [status, code]] of [
        ['an unknown method', 'FOO /orders HTTP/1.1\r\nhost: orders\r\n\r\n', invalid],
        ['a malformed request line', 'GET /orders/7 HTTX/1.1\r\nhost: orders\r\n\r\n', invalid],
        ['a header line without a colon', 'GET /orders/7 HTTP/1.1\r\nhost: orders\r\nBad Header\r\n\r\n', invalid],
        [
          'both content-length and transfer-encoding',
          `${head('POST /orders', 'content-length: 3', 'transfer-encoding: chunked')}0\r\n\r\n`,
          invalid,
        ],
        ['a content-length that is not a number', head('POST /orders', 'content-length: abc'), invalid],
        ['headers over the limit', head('GET /orders/7', padding), [431, 'LOCKSTEP_ERR_HEADERS_TOO_LARGE'] as const],
      ] as const) {
        test(`raw socket: ${label} → ${status}, in the guard's words and audited`, async () => {
          for (const cert of [null, w.svids.gateway]) {
            const { answer } = await refused(cert, raw, status, code);
            assert.equal(answer.headers.connection, 'close');
          }
        });
      }
    });
  });
}
