/**
 * The decision service against a real control plane: it joins as `orders` with a join token, gets
 * orders' signed policy slice from the stream, and decides for a trusted proxy (`svc/edge`) with
 * real SVIDs, real Txn-Tokens and real Cedar — nginx auth_request, Traefik forwardAuth, Envoy
 * ext_authz (HTTP) and AuthZEN — and refuses every way of lying about the client's identity.
 */
import assert from 'node:assert/strict';
import { X509Certificate } from 'node:crypto';
import { after, before, describe, it, mock } from 'node:test';
import { Agent, Client, request } from 'undici';
import { createTestCa } from '@lockstep/testkit';
import type { WorkloadCredentials } from '@lockstep/workload';
import type { AuthzServer } from '../src/authz/index.ts';
import { startAuthzWorld, TD, type AuthzWorld } from './authz-world.ts';

let world: AuthzWorld;
let authz: AuthzServer;
let edge: WorkloadCredentials;
let gateway: WorkloadCredentials;
let payments: WorkloadCredentials;
/** A second trusted proxy, not allowed AuthZEN; revoked in one test. */
let mesh: WorkloadCredentials;
let customerToken: string;

const ROUTES = {
  'GET /health': { public: true },
  'GET /orders/:id': { action: 'orders:read' },
  'POST /orders': { action: 'orders:create' },
  // An owner lookup: AuthZEN must name the request (method and path) for this route's params to be known.
  'DELETE /orders/:id': { action: 'orders:delete', owner: ({ id }: { id?: string }) => (id === '7' ? 'alice' : null) },
};

before(async () => {
  world = await startAuthzWorld('lockstep-authz-');
  ({ edge, gateway, payments, customerToken } = world);
  mesh = await world.enrol('mesh');
  authz = await world.startOrdersAuthz({
    routes: ROUTES,
    trustedProxies: [edge.spiffeId, mesh.spiffeId],
    authzenCallers: [edge.spiffeId],
  });
});

after(async () => {
  await world.close();
});

function leafPem(chainPem: string): string {
  return new X509Certificate(chainPem).toString();
}

interface Answer {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: string;
}

/** One request to the decision service, presenting `as` (default: the trusted proxy's SVID). */
async function ask(
  path: string,
  options: {
    method?: string;
    headers?: Record<string, string | string[]>;
    body?: string;
    as?: { cert: string; key: string } | null;
  } = {},
): Promise<Answer> {
  const as = options.as === undefined ? { cert: edge.chainPem, key: edge.keyPem } : options.as;
  const dispatcher = new Agent({
    connect: { ...(as ?? {}), ca: world.ca.bundlePem, checkServerIdentity: () => undefined },
  });
  try {
    const response = await request(`${authz.url}${path}`, {
      dispatcher,
      method: (options.method ?? 'GET') as 'GET',
      headers: options.headers ?? {},
      ...(options.body === undefined ? {} : { body: options.body }),
    });
    return { status: response.statusCode, headers: response.headers, body: await response.body.text() };
  } finally {
    await dispatcher.close();
  }
}

/** An AuthZEN evaluation (the gateway reading orders for alice) asked by `caller` instead of the trusted edge. */
function authzenAs(caller: WorkloadCredentials) {
  return ask('/access/v1/evaluation', {
    method: 'POST',
    as: { cert: caller.chainPem, key: caller.keyPem },
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({
      subject: { type: 'workload', id: gateway.spiffeId },
      action: { name: 'orders:read' },
      resource: { type: 'service', id: 'orders' },
      context: { txn_token: customerToken },
    }),
  });
}

function nginxAsk(method: string, uri: string, clientCertPem: string | null, token: string | null) {
  const headers: Record<string, string> = { 'x-original-method': method, 'x-original-uri': uri };
  if (clientCertPem !== null) headers['x-client-cert'] = encodeURIComponent(clientCertPem);
  if (token !== null) headers['txn-token'] = token;
  return ask('/nginx/auth', { headers });
}

describe('nginx auth_request', () => {
  it('allows a permitted caller with its Txn-Token, and names it for the upstream', async () => {
    const answer = await nginxAsk('GET', '/orders/7?x=1', leafPem(gateway.chainPem), customerToken);
    assert.equal(answer.status, 200);
    assert.equal(answer.headers['lockstep-caller'], gateway.spiffeId);
    const event = world.lastDecision(answer.headers['lockstep-request-id']);
    assert.equal(event.decision, 'allow');
    assert.equal(event.via, 'authz-server');
    assert.equal(event.service, 'orders');
    assert.equal(event.caller, gateway.spiffeId);
    assert.equal(event.action, 'orders:read');
    assert.equal(event.route, '/orders/:id');
    assert.deepEqual(event.policyIds, ['gateway-customer-orders']);
  });

  it('refuses a forbidden action with 403 and the code in a header', async () => {
    const answer = await nginxAsk('DELETE', '/orders/7', leafPem(gateway.chainPem), customerToken);
    assert.equal(answer.status, 403);
    assert.equal(answer.headers['lockstep-error'], 'LOCKSTEP_ERR_DENIED');
    assert.equal(world.lastDecision(answer.headers['lockstep-request-id']).reason, 'LOCKSTEP_ERR_DENIED');
  });

  it('refuses a caller the policy does not name (payments) with 403', async () => {
    const answer = await nginxAsk('GET', '/orders/7', leafPem(payments.chainPem), customerToken);
    assert.equal(answer.status, 403);
    assert.equal(answer.headers['lockstep-error'], 'LOCKSTEP_ERR_DENIED');
  });

  it('refuses a request without a Txn-Token with 401', async () => {
    const answer = await nginxAsk('GET', '/orders/7', leafPem(gateway.chainPem), null);
    assert.equal(answer.status, 401);
    assert.equal(answer.headers['lockstep-error'], 'LOCKSTEP_ERR_TXN_TOKEN_MISSING');
  });

  it('refuses a client without a certificate with 401', async () => {
    const answer = await nginxAsk('GET', '/orders/7', null, customerToken);
    assert.equal(answer.status, 401);
    assert.equal(answer.headers['lockstep-error'], 'LOCKSTEP_ERR_PEER_CERT_MISSING');
  });

  it('lets a public route through without identity', async () => {
    const answer = await nginxAsk('GET', '/health', null, null);
    assert.equal(answer.status, 200);
    assert.equal(world.lastDecision(answer.headers['lockstep-request-id']).reason, 'LOCKSTEP_ALLOW_PUBLIC');
  });

  it('answers an unknown route 403 (nginx passes only 401 and 403), keeping the code', async () => {
    const answer = await nginxAsk('GET', '/admin', leafPem(gateway.chainPem), customerToken);
    assert.equal(answer.status, 403);
    assert.equal(answer.headers['lockstep-error'], 'LOCKSTEP_ERR_ROUTE_UNKNOWN');
  });
});

describe('Traefik forwardAuth and Envoy ext_authz (HTTP)', () => {
  it('Traefik: X-Forwarded-Method/-Uri and the client chain as Traefik sends it', async () => {
    const der = Buffer.from(new X509Certificate(gateway.chainPem).raw).toString('base64');
    const headers = {
      'x-forwarded-method': 'GET',
      'x-forwarded-uri': '/orders/3',
      'x-forwarded-tls-client-cert': encodeURIComponent(der),
      'txn-token': customerToken,
    };
    assert.equal((await ask('/traefik/auth', { headers })).status, 200);
    const denied = await ask('/traefik/auth', { headers: { ...headers, 'x-forwarded-method': 'DELETE' } });
    assert.equal(denied.status, 403);
  });

  it('a public route: lockstep-caller is sent empty (it replaces a forged one) and Envoy is told to remove it', async () => {
    const answer = await ask('/envoy/ext_authz/health', { headers: { 'lockstep-caller': gateway.spiffeId } });
    assert.equal(answer.status, 200);
    assert.equal(answer.headers['lockstep-caller'], '');
    assert.equal(answer.headers['x-envoy-auth-headers-to-remove'], 'lockstep-caller');
  });

  it('Envoy: the original path after the prefix, the client from XFCC', async () => {
    const xfcc = `By=spiffe://${TD}/svc/orders;Hash=abc;Cert="${encodeURIComponent(leafPem(gateway.chainPem))}";URI=${gateway.spiffeId}`;
    const allowed = await ask('/envoy/ext_authz/orders/9', {
      headers: { 'x-forwarded-client-cert': xfcc, 'txn-token': customerToken },
    });
    assert.equal(allowed.status, 200);
    assert.equal(allowed.headers['lockstep-caller'], gateway.spiffeId);
    const denied = await ask('/envoy/ext_authz/orders/9', {
      method: 'DELETE',
      headers: { 'x-forwarded-client-cert': xfcc, 'txn-token': customerToken },
    });
    assert.equal(denied.status, 403);
    const unknown = await ask('/envoy/ext_authz/nowhere', {
      headers: { 'x-forwarded-client-cert': xfcc, 'txn-token': customerToken },
    });
    assert.equal(unknown.status, 404, 'Envoy passes the status on: the catalogue’s own');
  });

  it('Envoy: an XFCC with more than one element is refused (APPEND_FORWARD lets the client write the last)', async () => {
    const client = `Cert="${encodeURIComponent(leafPem(gateway.chainPem))}";URI=${gateway.spiffeId}`;
    const answer = await ask('/envoy/ext_authz/orders/9', {
      headers: { 'x-forwarded-client-cert': `By=spiffe://${TD}/svc/x;Hash=00,${client}`, 'txn-token': customerToken },
    });
    assert.equal(answer.status, 401);
    assert.equal(answer.headers['lockstep-error'], 'LOCKSTEP_ERR_PEER_ID_INVALID');
  });

  it('Envoy: an element ended by ";" is still read (never taken as no certificate)', async () => {
    const answer = await ask('/envoy/ext_authz/orders/9', {
      headers: {
        'x-forwarded-client-cert': `Cert="${encodeURIComponent(leafPem(gateway.chainPem))}";`,
        'txn-token': customerToken,
      },
    });
    assert.equal(answer.status, 200, answer.body);
  });

  it('nginx: a client certificate header sent twice is an invalid identity (which one would count?)', async () => {
    const answer = await ask('/nginx/auth', {
      headers: {
        'x-original-method': 'GET',
        'x-original-uri': '/orders/9',
        'x-client-cert': [encodeURIComponent(leafPem(gateway.chainPem)), encodeURIComponent(leafPem(gateway.chainPem))],
        'txn-token': customerToken,
      },
    });
    assert.equal(answer.status, 401);
    assert.equal(answer.headers['lockstep-error'], 'LOCKSTEP_ERR_PEER_ID_INVALID');
  });

  it('Envoy: an XFCC that does not parse is an invalid identity, not a missing one', async () => {
    const answer = await ask('/envoy/ext_authz/orders/9', {
      headers: { 'x-forwarded-client-cert': 'Cert="unterminated', 'txn-token': customerToken },
    });
    assert.equal(answer.status, 401);
    assert.equal(answer.headers['lockstep-error'], 'LOCKSTEP_ERR_PEER_ID_INVALID');
  });
});

describe('AuthZEN 1.0', () => {
  const evaluation = (action: string, subject = `spiffe://${TD}/svc/gateway`) => ({
    subject: { type: 'workload', id: subject },
    action: { name: action },
    resource: { type: 'service', id: 'orders' },
    context: { txn_token: customerToken },
  });
  const post = (path: string, body: unknown, as?: { cert: string; key: string }) =>
    ask(path, {
      method: 'POST',
      headers: { 'content-type': 'application/json', 'x-request-id': 'r-1' },
      body: JSON.stringify(body),
      ...(as === undefined ? {} : { as }),
    });

  it('/access/v1/evaluation: permit and deny', async () => {
    const permit = await post('/access/v1/evaluation', evaluation('orders:read'));
    assert.equal(permit.status, 200);
    assert.equal(permit.headers['x-request-id'], 'r-1');
    const permitted = JSON.parse(permit.body) as { decision: boolean; context: { request_id: string } };
    assert.equal(permitted.decision, true);
    assert.equal(world.lastDecision(permitted.context.request_id).via, 'authz-server');
    const request = { type: 'service', id: 'orders', properties: { method: 'DELETE', path: '/orders/7' } };
    const deny = JSON.parse(
      (await post('/access/v1/evaluation', { ...evaluation('orders:delete'), resource: request })).body,
    ) as { decision: boolean; context: { reason: string; request_id: string } };
    assert.deepEqual([deny.decision, deny.context.reason], [false, 'LOCKSTEP_ERR_DENIED']);
    assert.equal(world.lastDecision(deny.context.request_id).route, '/orders/:id', 'decided for that request');
  });

  it('names one request in resource.properties: its route must perform the action; an owner needs it', async () => {
    const decide = async (body: unknown) =>
      JSON.parse((await post('/access/v1/evaluation', body)).body) as {
        decision: boolean;
        context: { reason?: string };
      };
    const read = { type: 'service', id: 'orders', properties: { method: 'GET', path: '/orders/42' } };
    assert.equal((await decide({ ...evaluation('orders:read'), resource: read })).decision, true);
    const mismatch = await decide({ ...evaluation('orders:create'), resource: read });
    assert.deepEqual([mismatch.decision, mismatch.context.reason], [false, 'LOCKSTEP_ERR_ROUTE_UNKNOWN']);
    const ownerUnknown = await decide(evaluation('orders:delete'));
    assert.deepEqual([ownerUnknown.decision, ownerUnknown.context.reason], [false, 'LOCKSTEP_ERR_INPUT_INVALID']);
    const sneaky = { ...read, properties: { method: 'GET', path: '/health/../orders/42' } };
    assert.equal(
      (await decide({ ...evaluation('orders:read'), resource: sneaky })).context.reason,
      'LOCKSTEP_ERR_ROUTE_UNKNOWN',
    );
  });

  it('refuses (400) a subject that is not a workload and a resource that is not a service', async () => {
    const user = await post('/access/v1/evaluation', {
      ...evaluation('orders:read'),
      subject: { type: 'user', id: 'alice' },
    });
    assert.equal(user.status, 400);
    const object = await post('/access/v1/evaluation', {
      ...evaluation('orders:read'),
      resource: { type: 'order', id: 'orders' },
    });
    assert.equal(object.status, 400);
    const badMethod = await post('/access/v1/evaluation', {
      ...evaluation('orders:read'),
      resource: { type: 'service', id: 'orders', properties: { method: 'get /x', path: '/orders/1' } },
    });
    assert.equal(badMethod.status, 400);
  });

  it('/access/v1/evaluations: defaults from the top level, and the three semantics', async () => {
    const { subject, resource, context } = evaluation('orders:read');
    const batch = {
      subject,
      resource,
      context,
      evaluations: [
        { action: { name: 'orders:read' } },
        { action: { name: 'orders:delete' } },
        { action: { name: 'orders:create' } },
      ],
    };
    const decisionsOf = async (options?: unknown) => {
      const answer = await post('/access/v1/evaluations', options === undefined ? batch : { ...batch, options });
      assert.equal(answer.status, 200);
      return (JSON.parse(answer.body) as { evaluations: { decision: boolean }[] }).evaluations.map((e) => e.decision);
    };
    assert.deepEqual(await decisionsOf(), [true, false, true]);
    assert.deepEqual(await decisionsOf({ evaluations_semantic: 'deny_on_first_deny' }), [true, false]);
    assert.deepEqual(await decisionsOf({ evaluations_semantic: 'permit_on_first_permit' }), [true]);
  });

  it('denies without a Txn-Token, for another trust domain, for another service, for a non-SPIFFE subject', async () => {
    const reasonOf = async (body: unknown) => {
      const answer = JSON.parse((await post('/access/v1/evaluation', body)).body) as {
        decision: boolean;
        context: { reason: string };
      };
      assert.equal(answer.decision, false);
      return answer.context.reason;
    };
    assert.equal(await reasonOf({ ...evaluation('orders:read'), context: {} }), 'LOCKSTEP_ERR_TXN_TOKEN_MISSING');
    assert.equal(
      await reasonOf(evaluation('orders:read', 'spiffe://evil.test/svc/gateway')),
      'LOCKSTEP_ERR_PEER_FOREIGN_TRUST_DOMAIN',
    );
    assert.equal(
      await reasonOf({ ...evaluation('orders:read'), resource: { type: 'service', id: 'payments' } }),
      'LOCKSTEP_ERR_ROUTE_UNKNOWN',
    );
    assert.equal(await reasonOf(evaluation('orders:read', 'gateway')), 'LOCKSTEP_ERR_PEER_ID_INVALID');
  });

  it('refuses malformed, oversized and non-JSON bodies', async () => {
    const malformed = await ask('/access/v1/evaluation', {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: '{"subject":',
    });
    assert.equal(malformed.status, 400);
    assert.equal(malformed.headers['lockstep-error'], 'LOCKSTEP_ERR_INPUT_INVALID');
    const shapeless = await post('/access/v1/evaluation', { subject: 'gateway' });
    assert.equal(shapeless.status, 400);
    const oversized = await ask('/access/v1/evaluation', {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ ...evaluation('orders:read'), padding: 'x'.repeat(70_000) }),
    });
    assert.equal(oversized.status, 413);
    const tooMany = await post('/access/v1/evaluations', {
      ...evaluation('orders:read'),
      evaluations: Array.from({ length: 65 }, () => ({})),
    });
    assert.equal(tooMany.status, 400);
    const text = await ask('/access/v1/evaluation', {
      method: 'POST',
      headers: { 'content-type': 'text/plain' },
      body: '{}',
    });
    assert.equal(text.status, 415);
  });
});

describe('attacks: identity only from what a trusted proxy proves', () => {
  it('refuses a caller that is not a trusted proxy, even with a valid client-certificate header', async () => {
    const answer = await ask('/nginx/auth', {
      as: { cert: gateway.chainPem, key: gateway.keyPem },
      headers: {
        'x-original-method': 'GET',
        'x-original-uri': '/orders/7',
        'x-client-cert': encodeURIComponent(leafPem(gateway.chainPem)),
        'txn-token': customerToken,
      },
    });
    assert.equal(answer.status, 403);
    assert.equal(answer.headers['lockstep-error'], 'LOCKSTEP_ERR_DENIED');
    const event = world.lastDecision(answer.headers['lockstep-request-id']);
    assert.equal(event.decision, 'deny');
    assert.equal(event.caller, null, 'the header was not read: no client was identified');
  });

  it('refuses an untrusted caller on AuthZEN too (its subject would be taken on its word)', async () => {
    const answer = await authzenAs(payments);
    assert.equal(answer.status, 403);
  });

  it('refuses a caller without a certificate, and one whose certificate does not chain', async () => {
    const none = await ask('/nginx/auth', { as: null, headers: { 'x-original-method': 'GET', 'x-original-uri': '/' } });
    assert.equal(none.status, 401);
    assert.equal(none.headers['lockstep-error'], 'LOCKSTEP_ERR_PEER_CERT_MISSING');
    const rogue = await createTestCa({ trustDomain: TD });
    const fakeEdge = await rogue.issueSvid({ service: 'edge' });
    const forged = await ask('/nginx/auth', {
      as: { cert: fakeEdge.chainPem, key: fakeEdge.keyPem },
      headers: { 'x-original-method': 'GET', 'x-original-uri': '/orders/1' },
    });
    assert.equal(forged.status, 401);
    assert.equal(forged.headers['lockstep-error'], 'LOCKSTEP_ERR_PEER_UNTRUSTED');
  });

  it('refuses a forged client certificate (same SPIFFE ID, another CA) in the header', async () => {
    const rogue = await createTestCa({ trustDomain: TD });
    const fake = await rogue.issueSvid({ service: 'gateway' });
    const answer = await nginxAsk('GET', '/orders/7', fake.chainPem, customerToken);
    assert.equal(answer.status, 401);
    assert.equal(answer.headers['lockstep-error'], 'LOCKSTEP_ERR_PEER_UNTRUSTED');
    // The real leaf followed by a rogue "intermediate" changes nothing either.
    const rogueIntermediate = await createTestCa({ trustDomain: TD, intermediate: true });
    const chained = await rogueIntermediate.issueSvid({ service: 'gateway' });
    assert.equal((await nginxAsk('GET', '/orders/7', chained.chainPem, customerToken)).status, 401);
  });

  it('refuses a certificate of another trust domain', async () => {
    const foreign = await createTestCa({ trustDomain: 'evil.test' });
    const svid = await foreign.issueSvid({ service: 'gateway' });
    const answer = await nginxAsk('GET', '/orders/7', svid.chainPem, customerToken);
    assert.equal(answer.status, 401);
    assert.match(String(answer.headers['lockstep-error']), /^LOCKSTEP_ERR_PEER_(UNTRUSTED|FOREIGN_TRUST_DOMAIN)$/);
  });

  it('refuses a header that is no certificate, and the proxy’s own missing facts', async () => {
    const garbage = await ask('/nginx/auth', {
      headers: {
        'x-original-method': 'GET',
        'x-original-uri': '/orders/7',
        'x-client-cert': 'hello',
        'txn-token': customerToken,
      },
    });
    assert.equal(garbage.status, 401);
    assert.equal(garbage.headers['lockstep-error'], 'LOCKSTEP_ERR_PEER_ID_INVALID');
    const noUri = await ask('/nginx/auth', { headers: { 'x-original-method': 'GET' } });
    assert.equal(noUri.status, 400);
  });

  it('refuses AuthZEN from a trusted proxy not listed in authzenCallers', async () => {
    const answer = await authzenAs(mesh);
    assert.equal(answer.status, 403);
    assert.equal(answer.headers['lockstep-error'], 'LOCKSTEP_ERR_DENIED');
  });

  it('refuses targets the upstream could normalize into another route (dot segments, encoded slashes, case): no route', async () => {
    for (const uri of [
      '/orders/%2e%2e',
      '/orders/..',
      '/orders/7%2F..%2F..%2Fadmin',
      '/orders/7%5cadmin',
      '/orders/7\\..',
      '//orders/7',
      '/orders/./7',
      '/health/../orders/7',
      // Tomcat and Spring drop `;params` and resolve `..;`; some servers decode twice.
      '/health/..;/orders/7',
      '/health/%2e%2e;x/orders/7',
      '/orders;x/7',
      '/health/%252e%252e/orders/7',
      '/health/..%00',
      '/Orders/7',
      '/orders/7/',
    ]) {
      const answer = await nginxAsk('GET', uri, leafPem(gateway.chainPem), customerToken);
      assert.equal(answer.status, 403, uri);
      assert.equal(answer.headers['lockstep-error'], 'LOCKSTEP_ERR_ROUTE_UNKNOWN', uri);
    }
    // Without a client certificate, transport refuses first: an outsider learns nothing about the path.
    const outsider = await nginxAsk('GET', '/health/../orders/7', null, customerToken);
    assert.equal(outsider.headers['lockstep-error'], 'LOCKSTEP_ERR_PEER_CERT_MISSING');
    const envoy = await ask('/envoy/ext_authz/orders/7%2F..%2Fadmin', {
      headers: {
        'x-forwarded-client-cert': `Cert="${encodeURIComponent(leafPem(gateway.chainPem))}"`,
        'txn-token': customerToken,
      },
    });
    assert.equal(envoy.status, 404);
    assert.equal(envoy.headers['lockstep-error'], 'LOCKSTEP_ERR_ROUTE_UNKNOWN');
  });

  /** The mesh proxy on one keep-alive connection (one undici Client): each `ask` reuses the first's socket. */
  function keepAliveMesh() {
    const client = new Client(authz.url, {
      connect: { cert: mesh.chainPem, key: mesh.keyPem, ca: world.ca.bundlePem, checkServerIdentity: () => undefined },
    });
    const headers = {
      'x-original-method': 'GET',
      'x-original-uri': '/orders/7',
      'x-client-cert': encodeURIComponent(leafPem(gateway.chainPem)),
      'txn-token': customerToken,
    };
    const state = { connects: 0 };
    client.on('connect', () => state.connects++);
    const ask = async () => {
      const response = await client.request({ path: '/nginx/auth', method: 'GET', headers });
      await response.body.text();
      return response;
    };
    return { ask, state, close: () => client.close() };
  }

  it('refuses a trusted proxy revoked while its keep-alive connection is open', async () => {
    const proxy = keepAliveMesh();
    try {
      assert.equal((await proxy.ask()).statusCode, 200);
      authz.guard.revoke({ kind: 'spiffeId', value: mesh.spiffeId });
      const after = await proxy.ask();
      assert.equal(after.statusCode, 401);
      assert.equal(after.headers['lockstep-error'], 'LOCKSTEP_ERR_PEER_REVOKED');
    } finally {
      authz.guard.lift({ kind: 'spiffeId', value: mesh.spiffeId });
      await proxy.close();
    }
    assert.equal(proxy.state.connects, 1, 'both requests went over one connection');
  });

  it('refuses a trusted proxy whose SVID expired while its keep-alive connection stayed open', async () => {
    const proxy = keepAliveMesh();
    try {
      assert.equal((await proxy.ask()).statusCode, 200);
      // The handshake verified the SVID then; past its notAfter the same connection must not keep it trusted.
      const notAfter = new X509Certificate(mesh.chainPem).validToDate.getTime();
      mock.timers.enable({ apis: ['Date'], now: notAfter + 1_000 });
      const expired = await proxy.ask();
      assert.equal(expired.statusCode, 401);
      assert.equal(expired.headers['lockstep-error'], 'LOCKSTEP_ERR_PEER_UNTRUSTED');
    } finally {
      mock.timers.reset();
      await proxy.close();
    }
    assert.equal(proxy.state.connects, 1, 'both requests went over one connection');
  });

  it('closes every proxy connection when the trust bundle rotates: each is verified again under the new one', async () => {
    const client = new Client(authz.url, {
      connect: { cert: mesh.chainPem, key: mesh.keyPem, ca: world.ca.bundlePem, checkServerIdentity: () => undefined },
    });
    try {
      const disconnected = new Promise<void>((resolve) => client.once('disconnect', () => resolve()));
      const headers = {
        'x-original-method': 'GET',
        'x-original-uri': '/orders/7',
        'x-client-cert': encodeURIComponent(leafPem(gateway.chainPem)),
        'txn-token': customerToken,
      };
      const response = await client.request({ path: '/nginx/auth', method: 'GET', headers });
      await response.body.dump();
      assert.equal(response.statusCode, 200, 'an allowed decision keeps the connection open');
      await world.ca.prepareRootRotation(); // the new root joins the bundle, pushed to the decision service's agent
      let timer: NodeJS.Timeout | undefined;
      await Promise.race([
        disconnected,
        new Promise((_, reject) => {
          timer = setTimeout(() => reject(new Error('the connection stayed open after the rotation')), 2_000); // well within the server's 5 s keep-alive timeout
        }),
      ]).finally(() => clearTimeout(timer));
    } finally {
      await client.close();
    }
  });

  it('refuses a revoked client at once', async () => {
    authz.guard.revoke({ kind: 'spiffeId', value: payments.spiffeId });
    const answer = await nginxAsk('GET', '/orders/7', leafPem(payments.chainPem), customerToken);
    assert.equal(answer.status, 401);
    assert.equal(answer.headers['lockstep-error'], 'LOCKSTEP_ERR_PEER_REVOKED');
  });
});
