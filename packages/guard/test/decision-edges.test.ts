/**
 * What the pipeline hands the policy, and its decisions at the edges, over real mTLS on the node:http
 * adapter (the pipeline is the same behind every adapter; the Express mount case needs Express).
 * Written for what the mutation run found untested (docs/mutation.md): the claims the example
 * policies never read (scope, tenant, the caller's service name), a new policy for a token already
 * decided, the owner of an object that does not exist, a failing owner lookup, dry run on an owner
 * route, a public request without Host over HTTP/1.0, a scan's token with a chain, and the caller
 * named in the audit event of an early refusal.
 */
import assert from 'node:assert/strict';
import type { Server } from 'node:https';
import type { AddressInfo } from 'node:net';
import { after, before, describe, it } from 'node:test';
import express from 'express';
import { policySetFromSources, signBundle } from '@lockstep/policy';
import { rawTlsRequest } from '@lockstep/testkit';
import type { Guard, GuardOptions } from '../src/index.ts';
import { lockstepExpress } from '../src/adapters/express.ts';
import { lockstepHttp } from '../src/adapters/node-http.ts';
import type { RouteTable } from '../src/route-table.ts';
import type { OwnerLookup } from '../src/routes.ts';
import {
  expectRefused,
  guardFor,
  parseRawAnswer,
  recordDecisions,
  settle,
  silentLogger,
  TRUST_DOMAIN,
  world,
  type Answer,
  type DecisionRecorder,
  type HandlerCall,
  type World,
} from './fixture.ts';

const GATEWAY = `spiffe://${TRUST_DOMAIN}/svc/gateway`;
const SCANNER = `spiffe://${TRUST_DOMAIN}/scanner/ci`;
const FORBID_ALL = '@id("none") forbid (principal, action, resource);';
const SCHEMA = `namespace Lockstep {
  action "orders:read", "orders:delete" appliesTo { principal: Workload, resource: Service, context: RequestContext };
}`;

/** A Cedar policy that lets the gateway perform `action` on the orders service, when `condition` holds. */
function permit(id: string, action: string, condition?: string): string {
  const when = condition === undefined ? '' : ` when { ${condition} }`;
  return (
    `@id("${id}") permit (principal == Lockstep::Workload::"${GATEWAY}", action == Lockstep::Action::"${action}", ` +
    `resource == Lockstep::Service::"orders")${when};`
  );
}

let w: World;
let decisions: DecisionRecorder;
before(async () => {
  w = await world();
  decisions = recordDecisions();
});
after(() => decisions.stop());

async function bundle(policies: string): Promise<string> {
  const set = policySetFromSources({ schema: SCHEMA, policies: { 'orders.cedar': policies } });
  return signBundle(set, { privateKey: w.policyKey.privateKey, kid: w.policyKey.kid, service: 'orders' });
}

async function guardWith(policies: string, overrides: Partial<GuardOptions> = {}): Promise<Guard> {
  return guardFor(w, { policy: { keys: w.policyKey.jwks, bundle: await bundle(policies) }, ...overrides });
}

interface Service {
  readonly url: string;
  readonly port: number;
  readonly calls: HandlerCall[];
  readonly orders: Map<string, unknown>;
  close(): Promise<void>;
}

/** `table` behind the node:http adapter; every handler call is recorded before it answers. */
async function serve(guard: Guard, table: RouteTable): Promise<Service> {
  const calls: HandlerCall[] = [];
  const server: Server = guard.createServer(
    lockstepHttp(guard, table, (request, response, { admission }) => {
      calls.push({ method: request.method ?? '', url: request.url ?? '', requestId: admission.requestId });
      response.writeHead(200, { 'content-type': 'application/json' });
      response.end(JSON.stringify({ ok: true }));
    }),
  );
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return {
    url: `https://127.0.0.1:${port}`,
    port,
    calls,
    orders: new Map(),
    async close() {
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
      await guard.close();
    },
  };
}

type Credentials = { chainPem: string; keyPem: string };

/** GET `url` with `token` over mTLS as `svid` (the gateway by default). */
async function get(url: string, token: string, svid: Credentials = w.svids.gateway, extra = {}): Promise<Answer> {
  const client = w.client(svid);
  try {
    return await client.request(url, { headers: { 'txn-token': token, ...extra } });
  } finally {
    await client.close();
  }
}

describe('what the policy sees', () => {
  it("scope, tenant and the caller's service name reach it from the token and the certificate", async () => {
    const policy = permit(
      'read-in-scope-for-t1-via-gateway',
      'orders:read',
      'context.scope.contains("orders:read") ' +
        '&& context has tenant && context.tenant == "t1" && context.callerService == "gateway"',
    );
    const service = await serve(await guardWith(policy), { 'GET /orders/:id': { action: 'orders:read' } });
    try {
      const url = `${service.url}/orders/1`;
      const allowed = await get(url, await w.customerToken());
      assert.equal(allowed.status, 200, 'scope orders:read, tenant t1, from the gateway');
      const refused = [
        await w.customerToken({ scope: 'orders:write' }),
        await w.customerToken({ tctx: { roles: ['customer'], tenant: 'other' } }),
        await w.customerToken({ tctx: { roles: ['customer'] } }),
      ];
      for (const token of refused) {
        await expectRefused(service, decisions, () => get(url, token), 403, 'LOCKSTEP_ERR_DENIED');
      }
      // A scanner probing as the gateway is decided with the gateway's service name, never reaching the handler.
      const scanner = await w.ca.issueCert({ uris: [SCANNER] });
      const scanToken = await w.customerToken({ req_wl: SCANNER });
      const probe = await get(url, scanToken, scanner, { 'lockstep-probe-as': GATEWAY });
      assert.deepEqual([probe.status, probe.headers['lockstep-probe']], [200, 'admitted'], probe.text);
      assert.equal(service.calls.length, 1);
    } finally {
      await service.close();
    }
  });

  it('a new policy applies at once to a token already decided, for its last action and an earlier one', async () => {
    const both = `${permit('read', 'orders:read')}\n${permit('delete', 'orders:delete')}`;
    const guard = await guardWith(both);
    const service = await serve(guard, {
      'GET /orders/:id': { action: 'orders:read' },
      'DELETE /orders/:id': { action: 'orders:delete' },
    });
    const client = w.client(w.svids.gateway);
    try {
      const url = `${service.url}/orders/1`;
      const [readOnly, readThenDelete] = [await w.customerToken(), await w.customerToken()];
      const send = (token: string, method: 'GET' | 'DELETE') => {
        return client.request(url, { method, headers: { 'txn-token': token } });
      };
      assert.equal((await send(readOnly, 'GET')).status, 200);
      assert.equal((await send(readThenDelete, 'GET')).status, 200);
      assert.equal((await send(readThenDelete, 'DELETE')).status, 200);
      await guard.setPolicyBundle(await bundle(permit('delete-only', 'orders:delete')));
      await expectRefused(service, decisions, () => send(readOnly, 'GET'), 403, 'LOCKSTEP_ERR_DENIED');
      await expectRefused(service, decisions, () => send(readThenDelete, 'GET'), 403, 'LOCKSTEP_ERR_DENIED');
      assert.equal((await send(readThenDelete, 'DELETE')).status, 200);
    } finally {
      await client.close();
      await service.close();
    }
  });
});

describe('owner rules', () => {
  const ORDERS = new Map([
    ['1', 'alice'],
    ['2', 'bob'],
  ]);
  let lookups = 0;
  const owner: OwnerLookup = ({ id }) => {
    lookups += 1;
    if (id === 'boom') throw new Error('orders database unreachable');
    return ORDERS.get(id ?? '') ?? null;
  };
  // A customer reads her own orders, and may learn that an order does not exist (owner "").
  const policy = permit(
    'own-or-none',
    'orders:read',
    'context has owner && (context.owner == context.sub || context.owner == "")',
  );
  const table: RouteTable = { 'GET /orders/:id': { action: 'orders:read', owner } };

  it('an object that does not exist has the owner "" (not no owner); bob\'s order is refused to alice', async () => {
    const service = await serve(await guardWith(policy), table);
    try {
      const token = await w.customerToken();
      assert.equal((await get(`${service.url}/orders/1`, token)).status, 200);
      assert.equal((await get(`${service.url}/orders/404`, token)).status, 200, 'no such order: owner ""');
      await expectRefused(service, decisions, () => get(`${service.url}/orders/2`, token), 403, 'LOCKSTEP_ERR_DENIED');
    } finally {
      await service.close();
    }
  });

  it('a failing owner lookup is a refusal (500), audited with its route, and no handler runs', async () => {
    const service = await serve(await guardWith(policy), table);
    try {
      const token = await w.customerToken();
      const send = () => get(`${service.url}/orders/boom`, token);
      const { event } = await expectRefused(service, decisions, send, 500, 'LOCKSTEP_ERR_INTERNAL');
      assert.deepEqual([event.route, event.action, event.caller], ['/orders/:id', 'orders:read', GATEWAY]);
    } finally {
      await service.close();
    }
  });

  it("in dry run, no owner lookup without a valid token: let through, audited with the token's refusal", async () => {
    const service = await serve(await guardWith(policy, { mode: 'dry-run' }), table);
    try {
      const before = lookups;
      const answer = await w.client(w.svids.gateway).request(`${service.url}/orders/1`);
      assert.equal(answer.status, 200, 'dry run');
      assert.equal(lookups, before, 'no owner lookup for an unverified token');
      const event = decisions.events.findLast((candidate) => candidate.requestId === service.calls.at(-1)?.requestId);
      const expected = ['allow', true, 'LOCKSTEP_ERR_TXN_TOKEN_MISSING'];
      assert.deepEqual([event?.decision, event?.dryRun, event?.reason], expected);
    } finally {
      await service.close();
    }
  });
});

describe('the pipeline at its edges', () => {
  it('a public route answers HTTP/1.0 without Host (required of HTTP/1.1 only), audited as not dry run', async () => {
    const service = await serve(await guardWith(FORBID_ALL), { 'GET /health': { public: true } });
    try {
      const raw = await rawTlsRequest({
        host: '127.0.0.1',
        port: service.port,
        caPem: w.ca.bundlePem,
        raw: 'GET /health HTTP/1.0\r\n\r\n',
      });
      assert.equal(typeof raw, 'string', JSON.stringify(raw));
      assert.equal(parseRawAnswer(raw as string).status, 200);
      const event = decisions.events.findLast((candidate) => candidate.requestId === service.calls.at(-1)?.requestId);
      assert.deepEqual([event?.reason, event?.dryRun], ['LOCKSTEP_ALLOW_PUBLIC', false]);
    } finally {
      await service.close();
    }
  });

  it("refuses a scan's token replayed by a workload also when a chain follows the scanner as requester", async () => {
    const table: RouteTable = { 'GET /orders/:id': { action: 'orders:read' } };
    const service = await serve(await guardWith(permit('read', 'orders:read')), table);
    try {
      const token = await w.customerToken({ req_wl: SCANNER, req_wl_chain: [GATEWAY] });
      const replay = () => get(`${service.url}/orders/1`, token);
      await expectRefused(service, decisions, replay, 401, 'LOCKSTEP_ERR_TXN_TOKEN_CLAIMS');
    } finally {
      await service.close();
    }
  });

  it('names the caller in the audit event of a refusal before any admission (mounted under a prefix)', async () => {
    const guard = await guardWith(FORBID_ALL, { logger: silentLogger });
    const app = express();
    app.use('/api', lockstepExpress(guard, { 'GET /orders/:id': { action: 'orders:read' } }));
    const server = guard.createServer(app);
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    try {
      const { port } = server.address() as AddressInfo;
      const answer = await get(`https://127.0.0.1:${port}/api/orders/1`, await w.customerToken());
      assert.equal(answer.status, 500);
      await settle();
      const event = decisions.byRequestId(String(answer.headers['lockstep-request-id']));
      assert.deepEqual([event?.reason, event?.caller], ['LOCKSTEP_ERR_INTERNAL', GATEWAY]);
    } finally {
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
      await guard.close();
    }
  });
});
