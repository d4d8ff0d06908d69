/**
 * The sidecar with the real thing: a control plane (CA, Txn-Token Service, policy, monitor), the
 * sidecar joined with a join token in front of a plain node:http upstream that echoes what it
 * received, a caller with a real SVID and a self-signed Txn-Token, and a guarded Node service that the
 * app behind the sidecar calls through the egress. Each attack below must fail, and the upstream must
 * not see it.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, statSync } from 'node:fs';
import {
  createServer,
  type IncomingHttpHeaders,
  type IncomingMessage,
  type Server,
  type ServerResponse,
} from 'node:http';
import { request as httpsRequest, type Server as HttpsServer } from 'node:https';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { Agent, request } from 'undici';
import { createGuard, currentAdmission, subscribeDecisions, type DecisionEvent, type Guard } from '@lockstep/guard';
import { lockstepHttp } from '@lockstep/guard/http';
import type { AssembledControlPlane } from '@lockstep/monitor';
import { joinAsWorkload, type WorkloadAgent } from '@lockstep/workload';
import { createSidecar, parseSidecarConfig, type Sidecar } from '../src/index.ts';
import { joinTokenFor, startControlPlane } from './control-plane-fixture.ts';

const TD = 'shop.test';
const svc = (name: string) => `spiffe://${TD}/svc/${name}`;
const scratch = mkdtempSync(join(tmpdir(), 'lockstep-sidecar-'));
const quiet = { info() {}, warn() {}, error() {} };
const logged: { message: string; fields: object | undefined }[] = [];
const recording = {
  info() {},
  warn() {},
  error: (message: string, fields?: object) => logged.push({ message, fields }),
};

const POLICY = `
@id("gateway-uses-orders")
permit (principal == Lockstep::Workload::"${svc('gateway')}",
        action in [Lockstep::Action::"orders:read", Lockstep::Action::"orders:create"],
        resource == Lockstep::Service::"orders");
@id("orders-charges-payments")
permit (principal == Lockstep::Workload::"${svc('orders')}", action == Lockstep::Action::"payments:charge",
        resource == Lockstep::Service::"payments");
@id("gateway-starts-its-own-work")
permit (principal == Lockstep::Workload::"${svc('gateway')}", action == Lockstep::Action::"tts:exchange:self_signed",
        resource == Lockstep::Service::"tts");
`;
const SCHEMA = `namespace Lockstep {
  action "orders:read", "orders:create", "orders:delete", "payments:charge"
    appliesTo { principal: Workload, resource: Service, context: RequestContext };
}`;

interface Seen {
  method: string;
  url: string;
  headers: IncomingHttpHeaders;
  body: string;
}

let controlPlane: AssembledControlPlane;
let upstream: Server;
const seen: Seen[] = [];
let sidecar: Sidecar;
let gateway: WorkloadAgent;
let payments: { agent: WorkloadAgent; guard: Guard; server: HttpsServer; origin: string; calls: number };
let txnToken: string;

/** The plain service behind the sidecar: answers what it received, or never answers `/slow`. */
function echo(request: IncomingMessage, response: ServerResponse): void {
  const chunks: Buffer[] = [];
  request.on('data', (chunk: Buffer) => chunks.push(chunk));
  request.on('end', () => {
    if (request.url === '/slow') return; // hangs: the sidecar must not wait for ever
    const record = { method: request.method ?? '', url: request.url ?? '', headers: request.headers };
    seen.push({ ...record, body: Buffer.concat(chunks).toString() });
    response.writeHead(200, { 'content-type': 'application/json', connection: 'keep-alive', 'x-from': 'upstream' });
    response.end(JSON.stringify({ ...record, body: Buffer.concat(chunks).toString() }));
  });
}

const joinToken = (service: string) => joinTokenFor(controlPlane, service);

async function until(check: () => boolean, what: string): Promise<void> {
  for (let i = 0; i < 250 && !check(); i++) await new Promise((resolve) => setTimeout(resolve, 20));
  assert.ok(check(), `timed out waiting for ${what}`);
}

function configFor(service: string, upstreamTarget: string, extra: Record<string, unknown> = {}) {
  return parseSidecarConfig({
    service,
    controlPlane: controlPlane.url,
    trustDomain: TD,
    listen: { host: '127.0.0.1', port: 0 },
    upstream: upstreamTarget,
    routes: {
      'GET /health': { public: true },
      'GET /public/*': { public: true },
      'GET /orders/:id': { action: 'orders:read' },
      'GET /slow': { action: 'orders:read' },
      'DELETE /orders/:id': { action: 'orders:delete' },
      // Dry run: the policy would deny the gateway this action; the request is served and the would-be denial audited.
      'GET /drafts/:id': { action: 'orders:delete', dryRun: true },
      'POST /orders': {
        action: 'orders:create',
        body: {
          type: 'object',
          required: ['item'],
          additionalProperties: false,
          properties: { item: { type: 'string' }, quantity: { type: 'integer', minimum: 1 } },
        },
      },
    },
    limits: { bodyBytes: 1024, connectTimeoutMs: 500, headersTimeoutMs: 500 },
    stateDir: join(scratch, `${service}-${Math.random().toString(16).slice(2)}`),
    ...extra,
  });
}

before(async () => {
  controlPlane = await startControlPlane(scratch, { schema: SCHEMA, policy: POLICY });

  // payments: a guarded Node service that the app behind the sidecar calls through the egress.
  const paymentsAgent = await joinAsWorkload({
    url: controlPlane.url,
    trustDomain: TD,
    joinToken: await joinToken('payments'),
    service: 'payments',
    stateDir: join(scratch, 'payments'),
  });
  const paymentsGuard = await createGuard({ ...paymentsAgent.guardOptions({ auditSpoolDir: false }), logger: quiet });
  paymentsAgent.attach(paymentsGuard);
  payments = { agent: paymentsAgent, guard: paymentsGuard, server: undefined as never, origin: '', calls: 0 };
  payments.server = paymentsGuard.createServer(
    lockstepHttp(paymentsGuard, { 'GET /charges/:id': { action: 'payments:charge' } }, (_request, response) => {
      payments.calls += 1;
      const admission = currentAdmission();
      const answer = {
        caller: admission?.peer?.spiffeId,
        sub: admission?.txn?.claims.sub,
        txn: admission?.txn?.claims.txn,
      };
      response.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify(answer));
    }),
  );
  await new Promise<void>((resolve) => payments.server.listen(0, '127.0.0.1', resolve));
  payments.origin = `https://127.0.0.1:${(payments.server.address() as { port: number }).port}`;

  upstream = createServer(echo);
  await new Promise<void>((resolve) => upstream.listen(0, '127.0.0.1', resolve));
  const upstreamUrl = `http://127.0.0.1:${(upstream.address() as { port: number }).port}`;
  sidecar = await createSidecar({
    config: configFor('orders', upstreamUrl, {
      egress: { port: 0, targets: { payments: payments.origin, impostor: payments.origin } },
    }),
    joinToken: await joinToken('orders'),
    logger: recording,
  });

  gateway = await joinAsWorkload({
    url: controlPlane.url,
    trustDomain: TD,
    joinToken: await joinToken('gateway'),
    service: 'gateway',
    stateDir: join(scratch, 'gateway'),
  });
  txnToken = await gateway.txnToken({ subjectTokenType: 'self_signed', scope: 'orders:read' });
  await until(() => sidecar.guard.policyVersion !== null && paymentsGuard.policyVersion !== null, 'the policy');
});

after(async () => {
  await sidecar?.close();
  upstream?.closeAllConnections();
  upstream?.close();
  payments?.server.close();
  await payments?.agent.close();
  await payments?.guard.close();
  await gateway?.close();
  await controlPlane?.close();
  rmSync(scratch, { recursive: true, force: true });
});

/** A call from the gateway: its SVID, the server checked to be `orders`, its Txn-Token. */
async function call(
  path: string,
  init: { method?: 'GET' | 'POST' | 'DELETE'; headers?: Record<string, string>; body?: string; url?: string } = {},
) {
  const response = await gateway.request(`${init.url ?? sidecar.url}${path}`, {
    server: 'orders',
    method: init.method ?? 'GET',
    txnToken,
    headers: init.headers ?? {},
    ...(init.body === undefined ? {} : { body: init.body }),
  });
  const text = await response.body.text();
  return { status: response.statusCode, headers: response.headers, text, json: () => JSON.parse(text) as Seen };
}

const json = { 'content-type': 'application/json' };

describe('lockstep sidecar: inbound', () => {
  it('forwards an admitted request with the verified identity, whatever the client claimed', async () => {
    const forged = {
      'x-lockstep-caller': svc('admin'),
      'X-Lockstep-Sub': 'root',
      'x-lockstep-roles': 'admin',
      'x-lockstep-anything': 'x',
      'x-forwarded-for': '10.9.9.9',
      'x-real-ip': '10.9.9.9',
    };
    const answer = await call('/orders/42?full=1', { headers: forged });
    assert.equal(answer.status, 200, answer.text);
    assert.equal(answer.headers['x-from'], 'upstream', 'the upstream answered');
    const { url, headers } = answer.json();
    assert.equal(url, '/orders/42?full=1');
    assert.equal(headers['x-lockstep-caller'], svc('gateway'));
    assert.equal(headers['x-lockstep-sub'], svc('gateway'), 'a self-signed token: the gateway acts for itself');
    assert.equal(headers['x-lockstep-roles'], '');
    assert.match(String(headers['x-lockstep-txn']), /\S/);
    assert.match(String(headers['x-lockstep-request-id']), /\S/);
    assert.equal(headers['txn-token'], txnToken, 'for the app to forward on its outbound calls');
    assert.equal(headers['x-lockstep-anything'], undefined);
    assert.equal(headers['x-forwarded-for'], '127.0.0.1', "the connection's address, not the client's word");
    assert.equal(headers['x-real-ip'], undefined);
    assert.equal(headers['x-forwarded-proto'], 'https');
  });

  it('forwards a body checked against the JSON Schema', async () => {
    const answer = await call('/orders', { method: 'POST', headers: json, body: '{"item":"book","quantity":2}' });
    assert.equal(answer.status, 200, answer.text);
    const { body, headers } = answer.json();
    assert.deepEqual(JSON.parse(body), { item: 'book', quantity: 2 });
    assert.equal(headers['content-type'], 'application/json');
  });

  it('refuses, and the upstream never sees: no client certificate, a forbidden action, bad bodies', async () => {
    const before = seen.length;
    const anonymous = new Agent({ connect: { ca: controlPlane.bundlePem, checkServerIdentity: () => undefined } });
    try {
      const response = await request(`${sidecar.url}/orders/1`, {
        dispatcher: anonymous,
        headers: { 'txn-token': txnToken },
      });
      assert.equal(response.statusCode, 401);
      assert.equal(((await response.body.json()) as { error: string }).error, 'LOCKSTEP_ERR_PEER_CERT_MISSING');
    } finally {
      await anonymous.close();
    }
    const refusals: [Parameters<typeof call>[1], number, string][] = [
      [{ method: 'DELETE' }, 403, 'LOCKSTEP_ERR_DENIED'],
      [
        { method: 'POST', headers: json, body: JSON.stringify({ item: 'x'.repeat(2000) }) },
        413,
        'LOCKSTEP_ERR_BODY_TOO_LARGE',
      ],
      [{ method: 'POST', headers: json, body: '{"item":' }, 400, 'LOCKSTEP_ERR_INPUT_INVALID'],
      [{ method: 'POST', headers: json, body: '{"item":"a","item":"b"}' }, 400, 'LOCKSTEP_ERR_INPUT_INVALID'],
      [{ method: 'POST', headers: json, body: '{"item":5}' }, 400, 'LOCKSTEP_ERR_INPUT_INVALID'],
      [{ method: 'POST', headers: json, body: '{"item":"a","admin":true}' }, 400, 'LOCKSTEP_ERR_INPUT_INVALID'],
    ];
    for (const [init, status, code] of refusals) {
      const path = init?.method === 'DELETE' ? '/orders/1' : '/orders';
      const answer = await call(path, init);
      assert.deepEqual(
        [answer.status, JSON.parse(answer.text).error],
        [status, code],
        `${init?.method} ${answer.text}`,
      );
    }
    assert.equal(seen.length, before, 'the upstream saw none of them');
  });

  it('matches no route with a path the upstream could normalise into another (dot segments, %2F, //, case, trailing /)', async () => {
    /** A request line sent as written (fetch and undici would resolve the dot segments first). */
    const raw = (path: string, withCertificate = true) =>
      new Promise<{ status: number; error: string; requestId: unknown }>((resolve, reject) => {
        const { chainPem, keyPem, bundlePem } = gateway.credentials;
        const req = httpsRequest(`${sidecar.url}/`, {
          path,
          ...(withCertificate ? { cert: chainPem, key: keyPem } : {}),
          ca: bundlePem,
          checkServerIdentity: () => undefined,
          headers: { 'txn-token': txnToken },
        });
        req.on('response', (response) => {
          const chunks: Buffer[] = [];
          response.on('data', (chunk: Buffer) => chunks.push(chunk));
          response.on('end', () => {
            const body = JSON.parse(Buffer.concat(chunks).toString()) as { error: string; requestId: string };
            resolve({
              status: response.statusCode ?? 0,
              error: body.error,
              requestId: response.headers['lockstep-request-id'],
            });
          });
        });
        req.on('error', reject).end();
      });
    const plain = await raw('/public/about');
    assert.equal(plain.status, 200, 'the public route itself is served');
    const before = seen.length;
    const attacks = [
      '/public/../orders/1',
      '/public/./../orders/1',
      '/public/..%2Forders%2F1',
      '/public/%2e%2e/orders/1',
      '/public/%2E%2E/orders/1',
      '/public/..;/orders/1',
      '/public/..%5corders',
      '/public/..\\orders',
      '//orders/1',
      '/public//x',
      '/orders/..%2Fhealth',
      // Another letter case: a case-insensitive upstream (Express, ASP.NET) would serve the enforced route.
      '/Orders/1',
      '/ORDERS/1',
      // A trailing slash: most frameworks serve /orders/1 for it.
      '/orders/1/',
      // A fragment (routers stop at '#', Go's net/http keeps it), and its encodings.
      '/public/x#/../orders/1',
      '/public/x%23/y',
      '/public/x%3F/y',
      // A method named in the query: Rails, Laravel and Symfony apply it.
      '/orders/1?_method=DELETE',
    ];
    for (const path of attacks) {
      const answer = await raw(path);
      assert.deepEqual([answer.status, answer.error], [404, 'LOCKSTEP_ERR_ROUTE_UNKNOWN'], path);
      assert.match(String(answer.requestId), /\S/, 'audited under a request id');
    }
    // Transport comes first: without a certificate, an outsider learns nothing about the path.
    for (const path of ['/public/../orders/1', '*']) {
      const outsider = await raw(path, false);
      assert.deepEqual([outsider.status, outsider.error], [401, 'LOCKSTEP_ERR_PEER_CERT_MISSING'], path);
    }
    assert.equal(seen.length, before, 'the upstream saw none of them');
  });

  it('matches no route when a header names another method or path (X-HTTP-Method-Override…)', async () => {
    const before = seen.length;
    for (const name of [
      'X-HTTP-Method-Override',
      'X-HTTP-Method',
      'X-Method-Override',
      'X-Original-URL',
      'X-Rewrite-URL',
    ]) {
      const answer = await call('/orders/1', {
        headers: { [name]: name.endsWith('URL') ? '/orders/1/delete' : 'DELETE' },
      });
      assert.deepEqual([answer.status, JSON.parse(answer.text).error], [404, 'LOCKSTEP_ERR_ROUTE_UNKNOWN'], name);
    }
    assert.equal(seen.length, before, 'the upstream saw none of them');
  });

  it('serves a dry-run route that the policy would deny, and audits the would-be denial', async () => {
    const events: DecisionEvent[] = [];
    const unsubscribe = subscribeDecisions((event) => events.push(event));
    const answer = await call('/drafts/3').finally(unsubscribe);
    assert.equal(answer.status, 200, answer.text);
    assert.equal(answer.json().url, '/drafts/3', 'the upstream served it');
    const requestId = String(answer.json().headers['x-lockstep-request-id']);
    const event = events.find((candidate) => candidate.requestId === requestId);
    assert.deepEqual([event?.dryRun, event?.reason], [true, 'LOCKSTEP_ERR_DENIED']);
  });

  it('refuses an oversized request head with 431, and the upstream never sees it', async () => {
    const before = seen.length;
    const answer = await call('/orders/1', { headers: { 'x-padding': 'x'.repeat(20_000) } });
    assert.equal(answer.status, 431, answer.text);
    assert.equal(JSON.parse(answer.text).error, 'LOCKSTEP_ERR_HEADERS_TOO_LARGE');
    assert.equal(seen.length, before, 'the upstream saw nothing');
  });

  it('answers 504 when the upstream hangs, within the timeout, audited and logged with the request id', async () => {
    const events: DecisionEvent[] = [];
    const unsubscribe = subscribeDecisions((event) => events.push(event));
    const started = Date.now();
    const answer = await call('/slow').finally(unsubscribe);
    assert.equal(answer.status, 504);
    const { error, requestId } = JSON.parse(answer.text) as { error: string; requestId: string };
    assert.equal(error, 'LOCKSTEP_ERR_UPSTREAM_TIMEOUT');
    assert.equal(answer.headers['lockstep-request-id'], requestId);
    assert.ok(Date.now() - started < 3_000, `answered after ${Date.now() - started} ms`);
    assert.ok(logged.some(({ fields }) => (fields as { requestId?: string } | undefined)?.requestId === requestId));
    const audited = events
      .filter((event) => event.requestId === requestId)
      .map((event) => [event.decision, event.reason]);
    assert.equal(audited.length, 2, JSON.stringify(audited));
    assert.equal(audited[0]?.[0], 'allow');
    assert.deepEqual(audited[1], ['deny', 'LOCKSTEP_ERR_UPSTREAM_TIMEOUT']);
  });

  it('answers 502 when the upstream is down, and serves a Unix socket once it is there', async () => {
    const socketPath = join(scratch, 'orders.sock');
    const second = await createSidecar({
      config: configFor('orders', `unix:${socketPath}`),
      joinToken: await joinToken('orders'),
      logger: quiet,
    });
    const onSocket = createServer(echo);
    try {
      await until(() => second.guard.policyVersion !== null, 'the policy');
      const down = await call('/orders/7', { url: second.url });
      assert.deepEqual([down.status, JSON.parse(down.text).error], [502, 'LOCKSTEP_ERR_UPSTREAM_UNAVAILABLE']);
      await new Promise<void>((resolve) => onSocket.listen(socketPath, resolve));
      const up = await call('/orders/7', { url: second.url });
      assert.equal(up.status, 200, up.text);
      assert.equal(up.json().headers['x-lockstep-caller'], svc('gateway'));
    } finally {
      await second.close();
      onSocket.closeAllConnections();
      onSocket.close();
    }
  });
});

describe('lockstep sidecar: egress', () => {
  async function egress(path: string, headers: Record<string, string>) {
    const response = await request(`${sidecar.egressUrl}${path}`, { headers });
    return { status: response.statusCode, body: (await response.body.json()) as Record<string, string> };
  }

  it("carries the app's call over mTLS with the sidecar's SVID and the Txn-Token forwarded", async () => {
    const answer = await egress('/charges/9', { 'lockstep-target': 'payments', 'txn-token': txnToken });
    assert.equal(answer.status, 200, JSON.stringify(answer.body));
    assert.equal(answer.body.caller, svc('orders'), 'payments sees the sidecar as its caller');
    assert.equal(answer.body.sub, svc('gateway'), 'on behalf of whom the transaction started');
  });

  it('serves the egress on a Unix socket made 0600 (no other local user borrows the SVID), replacing a stale one', async () => {
    const socketPath = join(scratch, 'egress.sock');
    // A socket file left by a process that died listening: nothing answers on it any more.
    const listenAndDie = `require('node:net').createServer().listen(${JSON.stringify(socketPath)}, () => process.exit(0))`;
    assert.equal(spawnSync(process.execPath, ['-e', listenAndDie]).status, 0);
    assert.ok(statSync(socketPath).isSocket(), 'the stale socket is there');
    const third = await createSidecar({
      config: configFor('orders', 'http://127.0.0.1:9', {
        egress: { socket: socketPath, targets: { payments: payments.origin } },
      }),
      joinToken: await joinToken('orders'),
      logger: quiet,
    });
    const overSocket = new Agent({ connect: { socketPath } });
    try {
      assert.equal(third.egressUrl, `unix:${socketPath}`);
      assert.equal(statSync(socketPath).mode & 0o777, 0o600);
      const response = await request('http://localhost/charges/9', {
        dispatcher: overSocket,
        headers: { 'lockstep-target': 'payments', 'txn-token': txnToken },
      });
      const body = (await response.body.json()) as Record<string, string>;
      assert.equal(response.statusCode, 200, JSON.stringify(body));
      assert.equal(body.caller, svc('orders'));
    } finally {
      await overSocket.close();
      await third.close();
    }
  });

  it('refuses a server whose certificate names another service, before sending anything', async () => {
    const calls = payments.calls;
    const answer = await egress('/charges/9', { 'lockstep-target': 'impostor', 'txn-token': txnToken });
    assert.equal(answer.status, 502);
    assert.equal(answer.body.error, 'LOCKSTEP_EGRESS_SERVER_REFUSED');
    assert.match(answer.body.message ?? '', /presented spiffe:\/\/shop\.test\/svc\/payments, not .*\/svc\/impostor/);
    assert.equal(payments.calls, calls);
  });

  it('is no forward proxy: an absolute-form or //host request target is refused, nothing leaves', async () => {
    const port = Number(new URL(sidecar.egressUrl ?? '').port);
    let elsewhere = 0;
    const other = createServer((_request, response) => {
      elsewhere += 1;
      response.end('metadata');
    });
    await new Promise<void>((resolve) => other.listen(0, '127.0.0.1', resolve));
    const otherPort = (other.address() as { port: number }).port;
    /** A request line sent as written: clients only send absolute-form to a proxy. */
    const raw = (target: string) =>
      new Promise<string>((resolve, reject) => {
        const socket = connect(port, '127.0.0.1', () =>
          socket.write(
            `GET ${target} HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\nlockstep-target: payments\r\n` +
              `txn-token: ${txnToken}\r\nConnection: close\r\n\r\n`,
          ),
        );
        let answer = '';
        socket.on('data', (chunk: Buffer) => (answer += chunk.toString()));
        socket.on('close', () => resolve(answer)).on('error', reject);
      });
    const calls = payments.calls;
    try {
      for (const target of [
        `http://127.0.0.1:${otherPort}/latest/meta-data/`,
        `https://127.0.0.1:${otherPort}/charges/9`,
        `//127.0.0.1:${otherPort}/charges/9`,
        '//example.invalid/charges/9',
        '/\\example.invalid/charges/9',
        // A traversal the app was tricked into: new URL() would resolve it; the egress refuses it.
        '/charges/../admin',
        '/charges/%2e%2e/admin',
      ]) {
        const answer = await raw(target);
        assert.match(answer, /^HTTP\/1\.1 400 /, target);
        const body = JSON.parse(answer.slice(answer.indexOf('\r\n\r\n') + 4)) as Record<string, string>;
        assert.equal(body.error, 'LOCKSTEP_EGRESS_PATH_INVALID', target);
        assert.match(body.message ?? '', /must be a path on payments/);
      }
      assert.equal(elsewhere, 0, 'no request reached another host');
      assert.equal(payments.calls, calls);
    } finally {
      other.close();
    }
  });

  it('refuses a call without a target, an unknown target, or no Txn-Token, saying what to send', async () => {
    const cases: [Record<string, string>, string][] = [
      [{ 'txn-token': txnToken }, 'LOCKSTEP_EGRESS_TARGET_MISSING'],
      [{ 'lockstep-target': 'billing', 'txn-token': txnToken }, 'LOCKSTEP_EGRESS_TARGET_UNKNOWN'],
      [{ 'lockstep-target': 'payments' }, 'LOCKSTEP_EGRESS_TXN_TOKEN_MISSING'],
      [{ host: 'evil.example', 'lockstep-target': 'payments', 'txn-token': txnToken }, 'LOCKSTEP_EGRESS_HOST_REFUSED'],
    ];
    for (const [headers, code] of cases) {
      const answer = await egress('/charges/9', headers);
      assert.deepEqual([answer.status, answer.body.error], [400, code]);
      assert.match(answer.body.message ?? '', /\w/);
    }
  });
});
