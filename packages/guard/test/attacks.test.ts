/**
 * The issue's bad-input catalogue, over real mTLS on 127.0.0.1, against every adapter. Each case
 * asserts the exact status, the error code in the body, and the audit event with that reason code;
 * the matching legitimate request succeeds.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { connect } from 'node:net';
import { revokedKidToken, rawTlsRequest, txnTokenAttacks, type MtlsClient, type TxnTokenRejection } from '@lockstep/testkit';
import type { GuardErrorCode } from '../src/index.ts';
import { adapters, guardFor, recordDecisions, startOrders, TRUST_DOMAIN, world, type RunningService, type World } from './fixture.ts';

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

interface Answer { status: number; text: string }

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
      const guard = await guardFor(w, { txnTokenKeys: { jwks: { keys: [...w.minter.jwks.keys, ...revoked.jwks.keys] } } });
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

    /** Asserts the refusal: status, body `{ error, requestId }` only, and the audit event. */
    function assertRefused(answer: Answer, status: number, code: GuardErrorCode): void {
      assert.equal(answer.status, status, `expected ${status} ${code}, got ${answer.status}: ${answer.text.slice(0, 300)}`);
      const body = JSON.parse(answer.text) as { error: string; requestId: string };
      assert.deepEqual(Object.keys(body).sort(), ['error', 'requestId']);
      assert.equal(body.error, code);
      const event = decisions.byRequestId(body.requestId);
      assert.ok(event, `an audit event for request ${body.requestId}`);
      assert.equal(event.reason, code);
      assert.equal(event.decision, 'deny');
      assert.equal(event.dryRun, false);
      assert.ok(!JSON.stringify(event).includes(token.slice(-20)), 'the audit event never carries a token');
    }

    async function asClient(cert: { chainPem: string; keyPem: string } | null, path = '/orders/7', headers: Record<string, string> = { 'txn-token': token }): Promise<Answer> {
      const head = Object.entries(headers).map(([name, value]) => `${name}: ${value}\r\n`).join('');
      const raw = `GET ${path} HTTP/1.1\r\nhost: orders\r\n${head}connection: close\r\n\r\n`;
      const result = await rawTlsRequest({ host: '127.0.0.1', port: service.port, caPem: w.ca.bundlePem, raw, ...(cert ? { certPem: cert.chainPem, keyPem: cert.keyPem } : {}) });
      if (typeof result !== 'string') throw new Error(`connection failed: ${result.error}`);
      const status = Number(/^HTTP\/1\.1 (\d{3})/.exec(result)?.[1]);
      return { status, text: result.slice(result.indexOf('\r\n\r\n') + 4) };
    }

    const hoursFromNow = (hours: number) => new Date(Date.now() + hours * 3_600_000);

    describe('transport', () => {
      test('legitimate: the gateway SVID is accepted', async () => {
        assert.equal((await asClient(w.svids.gateway)).status, 200);
      });
      test('no client certificate', async () => {
        assertRefused(await asClient(null), 401, 'LOCKSTEP_ERR_PEER_CERT_MISSING');
      });
      test('certificate from a foreign CA', async () => {
        assertRefused(await asClient(await w.foreignCa.issueSvid({ service: 'gateway' })), 401, 'LOCKSTEP_ERR_PEER_UNTRUSTED');
      });
      test('expired certificate', async () => {
        assertRefused(await asClient(await w.ca.issueCert({ uris: [GATEWAY], notBefore: hoursFromNow(-2), notAfter: hoursFromNow(-1) })), 401, 'LOCKSTEP_ERR_PEER_UNTRUSTED');
      });
      test('not-yet-valid certificate', async () => {
        assertRefused(await asClient(await w.ca.issueCert({ uris: [GATEWAY], notBefore: hoursFromNow(1), notAfter: hoursFromNow(2) })), 401, 'LOCKSTEP_ERR_PEER_UNTRUSTED');
      });
      test('two URI SANs', async () => {
        assertRefused(await asClient(await w.ca.issueCert({ uris: [GATEWAY, `spiffe://${TRUST_DOMAIN}/svc/reports`] })), 401, 'LOCKSTEP_ERR_PEER_ID_INVALID');
      });
      test('no URI SAN (DNS name only)', async () => {
        assertRefused(await asClient(await w.ca.issueCert({ dnsNames: ['gateway.shop.test'] })), 401, 'LOCKSTEP_ERR_PEER_ID_INVALID');
      });
      test('no SAN extension at all', async () => {
        assertRefused(await asClient(await w.ca.issueCert({ uris: [GATEWAY], noSan: true })), 401, 'LOCKSTEP_ERR_PEER_ID_INVALID');
      });
      for (const [label, uri] of [['trust domain with a suffix', 'spiffe://shop.test.evil/svc/gateway'], ['trust domain with a prefix', 'spiffe://evilshop.test/svc/gateway']] as const) {
        test(`lookalike ${label}: ${uri}`, async () => {
          assertRefused(await asClient(await w.ca.issueCert({ uris: [uri] })), 401, 'LOCKSTEP_ERR_PEER_FOREIGN_TRUST_DOMAIN');
        });
      }
      for (const uri of ['spiffe://shop%2etest/svc/gateway', 'spiffe://SHOP.TEST/svc/gateway', 'SPIFFE://shop.test/svc/gateway', 'spiffe://shop.test/svc/../svc/gateway', 'spiffe://user@shop.test/svc/gateway', 'spiffe://shop.test:443/svc/gateway']) {
        test(`malformed or encoded SPIFFE ID: ${uri}`, async () => {
          assertRefused(await asClient(await w.ca.issueCert({ uris: [uri] })), 401, 'LOCKSTEP_ERR_PEER_ID_INVALID');
        });
      }
      test('a CA certificate presented as the leaf', async () => {
        assertRefused(await asClient(await w.ca.issueCert({ uris: [GATEWAY], ca: true })), 401, 'LOCKSTEP_ERR_PEER_ID_INVALID');
      });
      test('plain HTTP to the TLS port gets no HTTP answer and is audited', async () => {
        const before = decisions.events.length;
        const reply = await new Promise<string>((resolve) => {
          const socket = connect(service.port, '127.0.0.1', () => socket.write(`GET /orders/7 HTTP/1.1\r\nhost: orders\r\ntxn-token: ${token}\r\n\r\n`));
          let data = '';
          socket.on('data', (chunk) => { data += chunk.toString('latin1'); });
          socket.on('close', () => resolve(data));
          socket.on('error', () => {});
        });
        assert.ok(!reply.startsWith('HTTP/'), 'no HTTP response over plain text');
        await waitFor(() => decisions.events.slice(before).some((event) => event.reason === 'LOCKSTEP_ERR_TLS_HANDSHAKE'));
      });
    });

    describe('Txn-Token', () => {
      test('legitimate: a valid Txn-Token is accepted', async () => {
        assert.equal((await gateway.request(`${service.url}/orders/7`, { headers: { 'txn-token': token } })).status, 200);
      });
      for (const attack of txnTokenAttacks) {
        test(`${attack.id}: ${attack.description}`, async () => {
          const built = await attack.build(w.minter);
          const values = Array.isArray(built) ? built : [built];
          const headers = values.flatMap((value) => ['txn-token', value]);
          const [status, code] = expectedCode[attack.expect];
          let answer: Answer;
          try {
            const response = await gateway.request(`${service.url}/orders/7`, { headers });
            answer = { status: response.status, text: response.text };
          } catch (error) {
            // A 1 MB header: the server answers 431 and closes while the client is still writing.
            if (attack.expect !== 'too-large') throw error;
            answer = await asClient(w.svids.gateway, '/orders/7', { 'txn-token': values[0] as string });
          }
          assertRefused(answer, status, code);
        });
      }
    });

    describe('authorization', () => {
      test('lateral movement: a valid SVID of a service the policy does not allow', async () => {
        assertRefused(await asClient(w.svids.reports), 403, 'LOCKSTEP_ERR_DENIED');
      });
      test('allowed service, but the user lacks the required role', async () => {
        const noRole = await w.customerToken({ tctx: { roles: ['guest'] } });
        assertRefused(await asClient(w.svids.gateway, '/orders/7', { 'txn-token': noRole }), 403, 'LOCKSTEP_ERR_DENIED');
      });
      test('method switching: GET allowed, DELETE denied for a customer; allowed for an admin', async () => {
        assert.equal((await gateway.request(`${service.url}/orders/7`, { headers: { 'txn-token': token } })).status, 200);
        const denied = await gateway.request(`${service.url}/orders/7`, { method: 'DELETE', headers: { 'txn-token': token } });
        assertRefused({ status: denied.status, text: denied.text }, 403, 'LOCKSTEP_ERR_DENIED');
        const admin = await w.customerToken({ tctx: { roles: ['admin'] } });
        assert.equal((await gateway.request(`${service.url}/orders/7`, { method: 'DELETE', headers: { 'txn-token': admin } })).status, 200);
      });
      test('a route the guard was never told about is unreachable, even with a handler', async () => {
        const answer = await asClient(w.svids.gateway, '/internal/debug');
        assert.ok(!answer.text.includes('secret'));
        assertRefused(answer, 404, 'LOCKSTEP_ERR_ROUTE_UNKNOWN');
      });
      test('a route without a permitting policy is denied', async () => {
        assertRefused(await asClient(w.svids.gateway, '/admin/stats'), 403, 'LOCKSTEP_ERR_DENIED');
      });
      for (const path of ['/admin/stats/', '/ADMIN/stats', '/Admin/Stats', '/orders/%2e%2e/admin/stats', '/orders/7/../../admin/stats', '//admin/stats', '/admin//stats', '/%61dmin/stats', '/admin/stats%2f', '/admin/stats;x=1', '/admin/stats?x=/orders/7']) {
        test(`path trick never reaches an unauthorized action: ${path}`, async () => {
          const answer = await asClient(w.svids.gateway, path);
          assert.ok(!answer.text.includes('secret'), `reached the admin handler via ${path}`);
          if (answer.status === 404) assertRefused(answer, 404, 'LOCKSTEP_ERR_ROUTE_UNKNOWN');
          else if (answer.status === 200) assert.fail(`${path} answered 200: ${answer.text}`);
          else assertRefused(answer, 403, 'LOCKSTEP_ERR_DENIED');
        });
      }
      test('public route needs no credentials, and is audited as public', async () => {
        const answer = await asClient(null, '/health', {});
        assert.equal(answer.status, 200);
        await waitFor(() => decisions.events.some((event) => event.route === '/health' && event.reason === 'LOCKSTEP_ALLOW_PUBLIC'));
      });
    });

    describe('input', () => {
      const post = (body: string, headers: Record<string, string> = {}) =>
        gateway.request(`${service.url}/orders`, { method: 'POST', body, headers: { 'txn-token': token, 'content-type': 'application/json', ...headers } })
          .then((response) => ({ status: response.status, text: response.text }));

      test('legitimate: a valid order is accepted', async () => {
        const answer = await post(JSON.stringify({ item: 'tea', quantity: 2 }));
        assert.equal(answer.status, 200, answer.text);
        assert.deepEqual((JSON.parse(answer.text) as { body: unknown }).body, { item: 'tea', quantity: 2 });
      });
      test('body failing the schema', async () => {
        assertRefused(await post(JSON.stringify({ item: 'tea', quantity: 'lots' })), 400, 'LOCKSTEP_ERR_INPUT_INVALID');
      });
      test('unknown field where the schema forbids it', async () => {
        assertRefused(await post(JSON.stringify({ item: 'tea', quantity: 2, price: 0 })), 400, 'LOCKSTEP_ERR_INPUT_INVALID');
      });
      test('body that is not JSON', async () => {
        assertRefused(await post('{"item": "tea",'), 400, 'LOCKSTEP_ERR_INPUT_INVALID');
      });
      test('prototype pollution attempt', async () => {
        assertRefused(await post('{"item":"tea","quantity":2,"__proto__":{"admin":true}}'), 400, 'LOCKSTEP_ERR_INPUT_INVALID');
      });
      test('oversized body', async () => {
        assertRefused(await post(JSON.stringify({ item: 'x'.repeat(2 * 1024 * 1024), quantity: 1 })), 413, 'LOCKSTEP_ERR_BODY_TOO_LARGE');
      });
      test('wrong content type', async () => {
        assertRefused(await post('item=tea&quantity=2', { 'content-type': 'application/x-www-form-urlencoded' }), 415, 'LOCKSTEP_ERR_UNSUPPORTED_MEDIA_TYPE');
        assertRefused(await post('tea', { 'content-type': 'text/plain' }), 415, 'LOCKSTEP_ERR_UNSUPPORTED_MEDIA_TYPE');
      });
      test('oversized headers', async () => {
        assertRefused(await asClient(w.svids.gateway, '/orders/7', { 'txn-token': token, 'x-padding': 'p'.repeat(32 * 1024) }), 431, 'LOCKSTEP_ERR_HEADERS_TOO_LARGE');
      });
      test('an unauthenticated oversized body is refused before it is read', async () => {
        const answer = await asClient(w.svids.reports, '/orders/7', {});
        assertRefused(answer, 401, 'LOCKSTEP_ERR_TXN_TOKEN_MISSING');
      });
    });
  });
}

async function waitFor(condition: () => boolean, timeoutMs = 2_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!condition()) {
    if (Date.now() > deadline) assert.fail('condition not met in time');
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}
