/**
 * Object-level authorization (BOLA, OWASP API1:2023) in the policy, not in handler code: a route
 * declares how to find the owner of the object it addresses; the guard looks it up only after the
 * caller and its Txn-Token are verified and asks Cedar with `context.owner`. One token reading two
 * orders gets two decisions — no cache answers for the wrong object.
 */
import assert from 'node:assert/strict';
import type { Server } from 'node:http';
import { after, before, describe, it } from 'node:test';
import express from 'express';
import Fastify from 'fastify';
import { policySetFromSources, signBundle } from '@lockstep/policy';
import { createGuard, type Guard } from '../src/index.ts';
import { lockstepExpress } from '../src/adapters/express.ts';
import { lockstep } from '../src/adapters/fastify.ts';
import { lockstepHttp } from '../src/adapters/node-http.ts';
import { adapters, recordDecisions, silentLogger, TRUST_DOMAIN, world, type Adapter, type World } from './fixture.ts';

const SCHEMA = `namespace Lockstep {
  action "orders:read" appliesTo { principal: Workload, resource: Service, context: RequestContext };
}`;
const POLICY = `@id("customers-read-their-own-orders")
permit (principal == Lockstep::Workload::"spiffe://shop.test/svc/gateway", action == Lockstep::Action::"orders:read", resource == Lockstep::Service::"orders")
when { context.roles.contains("customer") && context has owner && context.owner == context.sub };`;

/** order id → customer who placed it */
const ORDERS = new Map([
  ['1', 'alice'],
  ['2', 'bob'],
]);
const owner = ({ id }: Readonly<Record<string, string | undefined>>) => ORDERS.get(id ?? '') ?? null;
let lookups = 0;
const countedOwner = (params: Readonly<Record<string, string | undefined>>) => {
  lookups += 1;
  return owner(params);
};

let w: World;
let guard: Guard;

before(async () => {
  w = await world();
  const set = policySetFromSources({ schema: SCHEMA, policies: { 'orders.cedar': POLICY } });
  guard = await createGuard({
    service: 'orders',
    trustDomain: TRUST_DOMAIN,
    trustBundle: w.ca.bundlePem,
    svid: { cert: w.svids.orders.chainPem, key: w.svids.orders.keyPem },
    txnTokenKeys: { jwks: { keys: [...w.minter.jwks.keys] } },
    policy: {
      keys: w.policyKey.jwks,
      bundle: await signBundle(set, { privateKey: w.policyKey.privateKey, kid: w.policyKey.kid, service: 'orders' }),
    },
    logger: silentLogger,
  });
});
after(async () => {
  await guard.close();
});

async function start(adapter: Adapter): Promise<{ url: string; close(): Promise<void> }> {
  const reply = (id: string | undefined) => JSON.stringify({ id, customer: ORDERS.get(id ?? '') });
  let server: Server;
  if (adapter === 'fastify') {
    const app = Fastify({ https: guard.tlsOptions() });
    await app.register(lockstep, { guard });
    app.get('/orders/:id', { config: { lockstep: { action: 'orders:read', owner: countedOwner } } }, async (request) =>
      reply((request.params as { id: string }).id),
    );
    await app.listen({ host: '127.0.0.1', port: 0 });
    return { url: `https://127.0.0.1:${(app.server.address() as { port: number }).port}`, close: () => app.close() };
  }
  if (adapter === 'express') {
    const app = express();
    app.use(lockstepExpress(guard, { 'GET /orders/:id': { action: 'orders:read', owner: countedOwner } }));
    app.get('/orders/:id', (req, res) => {
      res.type('json').send(reply(req.params.id));
    });
    server = guard.createServer(app);
  } else {
    server = guard.createServer(
      lockstepHttp(
        guard,
        { 'GET /orders/:id': { action: 'orders:read', owner: countedOwner } },
        (_req, res, { params }) => {
          res.writeHead(200, { 'content-type': 'application/json' });
          res.end(reply(params.id));
        },
      ),
    );
  }
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    url: `https://127.0.0.1:${(server.address() as { port: number }).port}`,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

for (const adapter of adapters) {
  describe(`object-level authorization (${adapter})`, () => {
    it("lets alice read her order and refuses bob's with one token, each decision audited with the owner rule", async () => {
      const service = await start(adapter);
      const decisions = recordDecisions();
      const client = w.client(w.svids.gateway);
      try {
        const token = await w.customerToken({ sub: 'alice' });
        const own = await client.request(`${service.url}/orders/1`, { headers: { 'txn-token': token } });
        assert.equal(own.status, 200, JSON.stringify(own));
        const others = await client.request(`${service.url}/orders/2`, { headers: { 'txn-token': token } });
        assert.equal(others.status, 403, "BOLA: another customer's order");
        const missing = await client.request(`${service.url}/orders/999`, { headers: { 'txn-token': token } });
        assert.equal(
          missing.status,
          403,
          'an order that does not exist looks like one that is not yours: no enumeration',
        );
        const again = await client.request(`${service.url}/orders/1`, { headers: { 'txn-token': token } });
        assert.equal(again.status, 200, 'the earlier denial is not served for the own order');
        const refused = decisions.events.filter((event) => event.decision === 'deny');
        assert.equal(refused.length, 2);
        assert.ok(refused.every((event) => event.reason === 'LOCKSTEP_ERR_DENIED' && event.sub === 'alice'));
        assert.deepEqual(decisions.events.find((event) => event.decision === 'allow')?.policyIds, [
          'customers-read-their-own-orders',
        ]);
      } finally {
        decisions.stop();
        await service.close();
      }
    });

    it('looks the owner up only for a verified caller and token', async () => {
      const service = await start(adapter);
      const client = w.client(w.svids.gateway);
      try {
        const before = lookups;
        const noToken = await client.request(`${service.url}/orders/1`);
        assert.equal(noToken.status, 401);
        const stranger = w.client(w.svids.reports);
        const wrongCaller = await stranger.request(`${service.url}/orders/1`, {
          headers: { 'txn-token': await w.customerToken({ sub: 'alice' }) },
        });
        assert.equal(wrongCaller.status, 403, 'the policy names the gateway');
        assert.equal(
          lookups - before,
          1,
          'no lookup without a valid token; one for the verified caller the policy then refuses',
        );
      } finally {
        await service.close();
      }
    });
  });
}

describe('object-level route options', () => {
  it('refuse an owner that is not a function, and an owner on a public route', async () => {
    const app = Fastify({ https: guard.tlsOptions() });
    await app.register(lockstep, { guard });
    assert.throws(
      () => app.get('/x/:id', { config: { lockstep: { owner: 'alice' as unknown as () => null } } }, async () => ({})),
      /owner must be a function/,
    );
    assert.throws(
      () => app.get('/y/:id', { config: { lockstep: { public: true, owner } } }, async () => ({})),
      /public route has no caller/,
    );
    await app.close();
  });
});
