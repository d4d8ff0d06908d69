/**
 * Behaviour beyond the attack catalogue, over real mTLS: the steady state does no verification and
 * no Cedar call, dry run lets would-be denials through and says so, 503 before any policy, revocations
 * take effect on cached tokens, and the outbound client propagates the Txn-Token and trace context —
 * but never to a peer outside the trust domain.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import Fastify from 'fastify';
import type { AddressInfo } from 'node:net';
import type { TLSSocket } from 'node:tls';
import { currentAdmission } from '../src/index.ts';
import { lockstep } from '../src/adapters/fastify.ts';
import {
  expectRefused,
  guardFor,
  recordDecisions,
  startOrders,
  TRUST_DOMAIN,
  world,
  type HandlerCall,
} from './fixture.ts';

test('steady state: a repeated request does no signature verification and no Cedar call', async () => {
  const w = await world();
  const service = await startOrders('fastify', await guardFor(w));
  const client = w.client(w.svids.gateway);
  try {
    const tokens = await Promise.all([1, 2, 3].map((n) => w.customerToken({ sub: `user-${n}` })));
    for (const token of tokens)
      assert.equal((await client.request(`${service.url}/orders/1`, { headers: { 'txn-token': token } })).status, 200);
    const cold = service.guard.stats();
    assert.equal(cold.tokens.verified, 3);
    for (let round = 0; round < 5; round++) {
      for (const token of tokens)
        assert.equal(
          (await client.request(`${service.url}/orders/${round}`, { headers: { 'txn-token': token } })).status,
          200,
        );
    }
    const warm = service.guard.stats();
    assert.equal(warm.tokens.verified, 3, 'no further signature verification');
    assert.equal(warm.decisions.misses, cold.decisions.misses, 'no further Cedar evaluation');
    assert.equal(warm.tokens.hits - cold.tokens.hits, 15);
  } finally {
    await client.close();
    await service.close();
    await service.guard.close();
  }
});

test('audit event: who, on whose behalf, what, which policy, why — and nothing secret', async () => {
  const w = await world();
  const service = await startOrders('fastify', await guardFor(w));
  const client = w.client(w.svids.gateway);
  const decisions = recordDecisions();
  try {
    const token = await w.customerToken({ txn: 'txn-audit-1' });
    const traceparent = '00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01';
    const res = await client.request(`${service.url}/orders/9`, { headers: { 'txn-token': token, traceparent } });
    assert.equal(res.status, 200);
    const event = decisions.events.find((e) => e.txn === 'txn-audit-1');
    assert.ok(event);
    assert.equal(event.service, 'orders');
    assert.equal(event.caller, `spiffe://${TRUST_DOMAIN}/svc/gateway`);
    assert.equal(event.sub, 'alice');
    assert.equal(event.action, 'orders:read');
    assert.equal(event.resource, 'orders');
    assert.equal(event.route, '/orders/:id');
    assert.equal(event.decision, 'allow');
    assert.equal(event.reason, 'LOCKSTEP_ALLOW');
    assert.deepEqual(event.policyIds, ['gateway-customer-orders']);
    assert.equal(event.policyVersion, service.guard.policyVersion);
    assert.equal(event.dryRun, false);
    assert.equal(event.traceId, '4bf92f3577b34da6a3ce929d0e0e4736');
    assert.ok(event.latencyMs >= 0 && event.latencyMs < 1000);
    assert.ok(!Number.isNaN(Date.parse(event.time)));
    const text = JSON.stringify(event);
    assert.ok(
      !text.includes(token.split('.')[2] as string) && !text.includes(token.split('.')[1] as string),
      'no token in the event',
    );
  } finally {
    decisions.stop();
    await client.close();
    await service.close();
    await service.guard.close();
  }
});

test('a denial is audited with the policy version that decided it; a refusal before any decision with none', async () => {
  const w = await world();
  const service = await startOrders('fastify', await guardFor(w));
  const client = w.client(w.svids.reports);
  const decisions = recordDecisions();
  try {
    const token = await w.customerToken();
    const { event } = await expectRefused(
      service,
      decisions,
      () => client.request(`${service.url}/orders/1`, { headers: { 'txn-token': token } }),
      403,
      'LOCKSTEP_ERR_DENIED',
    );
    assert.ok(service.guard.policyVersion !== null);
    assert.equal(event.policyVersion, service.guard.policyVersion);
    const { event: early } = await expectRefused(
      service,
      decisions,
      () => client.request(`${service.url}/orders/1`, { headers: {} }),
      401,
      'LOCKSTEP_ERR_TXN_TOKEN_MISSING',
    );
    assert.equal(early.policyVersion, null);
  } finally {
    decisions.stop();
    await client.close();
    await service.close();
    await service.guard.close();
  }
});

test('no policy bundle yet: 503 LOCKSTEP_ERR_NO_POLICY, then the bundle arrives and requests pass', async () => {
  const w = await world();
  const guard = await guardFor(w, { policy: { keys: w.policyKey.jwks } });
  const service = await startOrders('fastify', guard);
  const client = w.client(w.svids.gateway);
  const decisions = recordDecisions();
  try {
    const token = await w.customerToken();
    const read = () => client.request(`${service.url}/orders/1`, { headers: { 'txn-token': token } });
    await expectRefused(service, decisions, read, 503, 'LOCKSTEP_ERR_NO_POLICY');
    const body = JSON.stringify({ item: 'tea', quantity: 1 });
    const headers = { 'txn-token': token, 'content-type': 'application/json' };
    const create = () => client.request(`${service.url}/orders`, { method: 'POST', body, headers });
    await expectRefused(service, decisions, create, 503, 'LOCKSTEP_ERR_NO_POLICY');
    await guard.setPolicyBundle(w.bundle);
    assert.equal((await client.request(`${service.url}/orders/1`, { headers: { 'txn-token': token } })).status, 200);
  } finally {
    decisions.stop();
    await client.close();
    await service.close();
    await guard.close();
  }
});

test('a policy bundle signed by an unknown key, or cut for another service, is refused and the old one kept', async () => {
  const w = await world();
  const guard = await guardFor(w);
  try {
    const { generateKeyPair } = await import('jose');
    const { signBundle } = await import('@lockstep/policy');
    const stranger = await generateKeyPair('ES256');
    const forged = await signBundle(w.policySet, {
      privateKey: stranger.privateKey,
      kid: w.policyKey.kid,
      service: 'orders',
    });
    await assert.rejects(guard.setPolicyBundle(forged));
    const otherService = await signBundle(w.policySet, {
      privateKey: w.policyKey.privateKey,
      kid: w.policyKey.kid,
      service: 'payments',
    });
    await assert.rejects(guard.setPolicyBundle(otherService));
    assert.ok(guard.policyVersion !== null);
  } finally {
    await guard.close();
  }
});

test('dry run (service-wide and per route): would-be denials pass and are audited as such; transport is still enforced', async () => {
  const w = await world();
  for (const mode of ['service', 'route'] as const) {
    const guard = await guardFor(w, mode === 'service' ? { mode: 'dry-run' } : {});
    const app = Fastify({ https: guard.tlsOptions() });
    await app.register(lockstep, { guard });
    const observed = { calls: [] as HandlerCall[], orders: new Map<string, unknown>() };
    const config = { lockstep: { action: 'orders:read', dryRun: mode === 'route' } };
    app.get('/reports', { config }, async (request) => {
      const requestId = currentAdmission()?.requestId ?? null;
      observed.calls.push({ method: request.method, url: request.url, requestId });
      return { ok: true };
    });
    await app.listen({ host: '127.0.0.1', port: 0 });
    const url = `https://127.0.0.1:${(app.server.address() as AddressInfo).port}`;
    const decisions = recordDecisions();
    const reports = w.client(w.svids.reports);
    try {
      const res = await reports.request(`${url}/reports`, { headers: {} });
      assert.equal(res.status, 200, `${mode}: a would-be denial passes in dry run`);
      const event = decisions.events.at(-1);
      assert.ok(event);
      assert.equal(event.decision, 'allow');
      assert.equal(event.dryRun, true);
      assert.equal(event.reason, 'LOCKSTEP_ERR_TXN_TOKEN_MISSING');
      assert.equal(observed.calls.length, 1, `${mode}: the would-be denial reached the handler`);
      const foreign = await w.foreignCa.issueSvid({ service: 'gateway' });
      const stranger = w.client(foreign);
      // An untrusted peer is refused even in dry run, and never reaches the handler.
      const untrusted = () => stranger.request(`${url}/reports`);
      await expectRefused(observed, decisions, untrusted, 401, 'LOCKSTEP_ERR_PEER_UNTRUSTED');
      await stranger.close();
    } finally {
      decisions.stop();
      await reports.close();
      await app.close();
      await guard.close();
    }
  }
});

test('revocation of a sub, a txn or a SPIFFE ID applies to cached tokens at once', async () => {
  const w = await world();
  const service = await startOrders('fastify', await guardFor(w));
  const client = w.client(w.svids.gateway);
  const decisions = recordDecisions();
  try {
    const bob = await w.customerToken({ sub: 'bob' });
    const carol = await w.customerToken({ sub: 'carol', txn: 'txn-carol' });
    const get = (token: string) => client.request(`${service.url}/orders/1`, { headers: { 'txn-token': token } });
    assert.equal((await get(bob)).status, 200);
    assert.equal((await get(carol)).status, 200);
    service.guard.revoke({ kind: 'sub', value: 'bob' });
    await expectRefused(service, decisions, () => get(bob), 401, 'LOCKSTEP_ERR_TXN_TOKEN_REVOKED');
    service.guard.revoke({ kind: 'txn', value: 'txn-carol' });
    await expectRefused(service, decisions, () => get(carol), 401, 'LOCKSTEP_ERR_TXN_TOKEN_REVOKED');
    service.guard.revoke({ kind: 'spiffeId', value: `spiffe://${TRUST_DOMAIN}/svc/gateway` });
    const fresh = await w.customerToken();
    await expectRefused(service, decisions, () => get(fresh), 401, 'LOCKSTEP_ERR_PEER_REVOKED');
  } finally {
    decisions.stop();
    await client.close();
    await service.close();
    await service.guard.close();
  }
});

test('outbound client: propagates the inbound Txn-Token and a child traceparent, with the current SVID', async () => {
  const w = await world();
  // payments: a bare mTLS server that reports what it received.
  const paymentsSvid = await w.ca.issueSvid({ service: 'payments' });
  const received: Array<{ txn: unknown; traceparent: unknown; peer: string }> = [];
  const paymentsApp = Fastify({
    https: {
      cert: paymentsSvid.chainPem,
      key: paymentsSvid.keyPem,
      ca: w.ca.bundlePem,
      requestCert: true,
      rejectUnauthorized: true,
    },
  });
  paymentsApp.get('/charge', async (request) => {
    const socket = request.raw.socket as TLSSocket;
    const san = socket.getPeerCertificate().subjectaltname ?? '';
    received.push({ txn: request.headers['txn-token'], traceparent: request.headers.traceparent, peer: san });
    return { charged: true };
  });
  await paymentsApp.listen({ host: '127.0.0.1', port: 0 });
  const paymentsUrl = `https://127.0.0.1:${(paymentsApp.server.address() as AddressInfo).port}`;

  const guard = await guardFor(w);
  const orders = Fastify({ https: guard.tlsOptions() });
  await orders.register(lockstep, { guard });
  orders.get('/orders/:id', { config: { lockstep: { action: 'orders:read' } } }, async () => {
    assert.ok(currentAdmission(), 'the handler runs inside the admission context');
    const answer = await guard.client.request(`${paymentsUrl}/charge`);
    return answer.body.json();
  });
  await orders.listen({ host: '127.0.0.1', port: 0 });
  const ordersUrl = `https://127.0.0.1:${(orders.server.address() as AddressInfo).port}`;
  const gateway = w.client(w.svids.gateway);
  try {
    const token = await w.customerToken();
    const traceparent = '00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01';
    const res = await gateway.request(`${ordersUrl}/orders/5`, { headers: { 'txn-token': token, traceparent } });
    assert.equal(res.status, 200, res.text);
    assert.equal(received.length, 1);
    assert.equal(received[0]?.txn, token, 'the Txn-Token travels unmodified');
    assert.match(String(received[0]?.traceparent), /^00-0af7651916cd43dd8448eb211c80319c-[0-9a-f]{16}-01$/);
    assert.notEqual(received[0]?.traceparent, traceparent, 'a child span, not the inbound parent id');
    assert.equal(received[0]?.peer, `URI:spiffe://${TRUST_DOMAIN}/svc/orders`, 'orders called with its own SVID');

    // After rotation the client presents the new SVID.
    const rotated = await w.ca.issueSvid({ service: 'orders' });
    guard.setSvid({ cert: rotated.chainPem, key: rotated.keyPem });
    assert.equal((await gateway.request(`${ordersUrl}/orders/6`, { headers: { 'txn-token': token } })).status, 200);
    assert.equal(received.length, 2);
  } finally {
    await gateway.close();
    await orders.close();
    await paymentsApp.close();
    await guard.close();
  }
});

test('outbound client: refuses a peer whose SVID is outside the trust domain before sending the Txn-Token', async () => {
  const w = await world();
  const evil = await w.ca.issueCert({ uris: ['spiffe://evil.test/svc/payments'] });
  let reached = false;
  const evilApp = Fastify({ https: { cert: evil.chainPem, key: evil.keyPem } });
  evilApp.get('/charge', async () => {
    reached = true;
    return {};
  });
  await evilApp.listen({ host: '127.0.0.1', port: 0 });
  const guard = await guardFor(w);
  try {
    await assert.rejects(
      guard.client.request(`https://127.0.0.1:${(evilApp.server.address() as AddressInfo).port}/charge`, {
        txnToken: await w.customerToken(),
      }),
      (error: Error & { code?: string; cause?: { code?: string } }) =>
        /outside|not in trust domain|refused/i.test(`${error.message} ${String(error.cause)}`),
    );
    assert.equal(reached, false, 'no request reached the foreign peer');
  } finally {
    await evilApp.close();
    await guard.close();
  }
});

test('policy bundles apply in call order and an older bundle cannot replace a newer one', async () => {
  const w = await world();
  const { signBundle, policySetFromSources } = await import('@lockstep/policy');
  const { readFileSync } = await import('node:fs');
  const schema = readFileSync(new URL('../example/policies/shop.cedarschema', import.meta.url), 'utf8');
  const readOnly = policySetFromSources({
    schema,
    policies: { 'a.cedar': '@id("a") permit (principal, action == Lockstep::Action::"orders:read", resource);' },
  });
  const sign = (set: typeof readOnly, seconds: number) =>
    signBundle(set, {
      privateKey: w.policyKey.privateKey,
      kid: w.policyKey.kid,
      service: 'orders',
      issuedAt: new Date(Date.now() - seconds * 1000),
    });
  const older = await sign(readOnly, 60);
  const newer = await sign(w.policySet, 10);
  const guard = await guardFor(w, { policy: { keys: w.policyKey.jwks } });
  try {
    // Not awaited in between: the last call wins, whatever the verification timing.
    const first = guard.setPolicyBundle(older);
    const second = guard.setPolicyBundle(newer);
    await first;
    const { version } = await second;
    assert.equal(guard.policyVersion, version);
    await assert.rejects(guard.setPolicyBundle(older), /roll back/);
    assert.equal(guard.policyVersion, version, 'the newer bundle stays in force');
  } finally {
    await guard.close();
  }
});

test('tlsOptions() used for a server that is never attached is reported loudly', async (t) => {
  const w = await world();
  const warnings: string[] = [];
  const guard = await guardFor(w, { logger: { info() {}, warn: (message) => warnings.push(message), error() {} } });
  try {
    t.mock.timers.enable({ apis: ['setTimeout'] });
    guard.tlsOptions();
    t.mock.timers.tick(5_000);
    assert.ok(
      warnings.some((message) => /client certificates are NOT enforced/.test(message)),
      warnings.join('\n'),
    );

    warnings.length = 0;
    const attached = await guardFor(w, {
      logger: { info() {}, warn: (message) => warnings.push(message), error() {} },
    });
    attached.createServer(() => {}).close();
    attached.tlsOptions();
    t.mock.timers.tick(5_000);
    assert.deepEqual(
      warnings.filter((message) => /NOT enforced/.test(message)),
      [],
      'no warning once a server is attached',
    );
    await attached.close();
  } finally {
    t.mock.timers.reset();
    await guard.close();
  }
});
