/**
 * One world for the guard's integration tests: a throw-away CA for trust domain shop.test (and a
 * foreign one), SVIDs for the protected `orders` service and its callers, a Txn-Token minter, the
 * example policies signed into a bundle — and `startOrders(adapter)`, the same orders service behind
 * the Fastify, Express or node:http adapter, over real mTLS on 127.0.0.1.
 */
import { generateKeyPair, exportJWK, type CryptoKey, type JWK } from 'jose';
import { fileURLToPath } from 'node:url';
import type { AddressInfo } from 'node:net';
import type { Server } from 'node:https';
import express from 'express';
import Fastify from 'fastify';
import { z } from 'zod';
import { loadPolicyDir, signBundle, type PolicySet } from '@lockstep/policy';
import { createMtlsClient, createTestCa, createTxnTokenMinter, type MtlsClient, type Svid, type TestCa, type TxnTokenMinter } from '@lockstep/testkit';
import { createGuard, currentAdmission, subscribeDecisions, type DecisionEvent, type Guard, type GuardOptions, type GuardLogger } from '../src/index.ts';
import { lockstep } from '../src/adapters/fastify.ts';
import { lockstepExpress } from '../src/adapters/express.ts';
import { lockstepHttp } from '../src/adapters/node-http.ts';

export const TRUST_DOMAIN = 'shop.test';
export const POLICY_DIR = fileURLToPath(new URL('../example/policies/', import.meta.url));
export type Adapter = 'fastify' | 'express' | 'http';
export const adapters: Adapter[] = ['fastify', 'express', 'http'];

export interface World {
  ca: TestCa;
  foreignCa: TestCa;
  svids: { orders: Svid; gateway: Svid; reports: Svid };
  minter: TxnTokenMinter;
  policySet: PolicySet;
  policyKey: { privateKey: CryptoKey; jwks: { keys: JWK[] }; kid: string };
  bundle: string;
  /** A valid Txn-Token for a customer, through the gateway. */
  customerToken(claims?: Record<string, unknown>): Promise<string>;
  client(svid: { certPem?: string; chainPem: string; keyPem: string }): MtlsClient;
}

let worldPromise: Promise<World> | null = null;

export function world(): Promise<World> {
  worldPromise ??= (async () => {
    const ca = await createTestCa({ trustDomain: TRUST_DOMAIN });
    const foreignCa = await createTestCa({ trustDomain: TRUST_DOMAIN, name: 'Foreign CA' });
    const [orders, gateway, reports] = await Promise.all(['orders', 'gateway', 'reports'].map((service) => ca.issueSvid({ service })));
    const minter = await createTxnTokenMinter({ trustDomain: TRUST_DOMAIN });
    const policySet = await loadPolicyDir(POLICY_DIR);
    const { privateKey, publicKey } = await generateKeyPair('ES256', { extractable: true });
    const kid = 'policy-test-1';
    const jwks = { keys: [{ ...(await exportJWK(publicKey)), kid, alg: 'ES256', use: 'sig' }] };
    const bundle = await signBundle(policySet, { privateKey, kid, service: 'orders' });
    const clients: MtlsClient[] = [];
    return {
      ca,
      foreignCa,
      svids: { orders: orders as Svid, gateway: gateway as Svid, reports: reports as Svid },
      minter,
      policySet,
      policyKey: { privateKey, jwks, kid },
      bundle,
      customerToken: (claims = {}) => minter.mint({ sub: 'alice', tctx: { roles: ['customer'], tenant: 't1' }, req_wl: `spiffe://${TRUST_DOMAIN}/svc/gateway`, ...claims }),
      client(svid) {
        const client = createMtlsClient({ certPem: svid.chainPem, keyPem: svid.keyPem, caPem: ca.bundlePem });
        clients.push(client);
        return client;
      },
    };
  })();
  return worldPromise;
}

export const silentLogger: GuardLogger = { info() {}, warn() {}, error() {} };

export async function guardFor(w: World, overrides: Partial<GuardOptions> = {}): Promise<Guard> {
  return createGuard({
    service: 'orders',
    trustDomain: TRUST_DOMAIN,
    trustBundle: w.ca.bundlePem,
    svid: { cert: w.svids.orders.chainPem, key: w.svids.orders.keyPem },
    txnTokenKeys: { jwks: w.minter.jwks as GuardOptions['txnTokenKeys'] extends infer T ? T extends { jwks: infer J } ? J : never : never },
    policy: { keys: w.policyKey.jwks, bundle: w.bundle },
    logger: silentLogger,
    ...overrides,
  });
}

export interface RunningService {
  url: string;
  port: number;
  guard: Guard;
  close(): Promise<void>;
}

const OrderBody = { item: z.string().min(1).max(64), quantity: z.number().int().min(1).max(100) };

/** The orders service behind `adapter`. Handlers answer with what the guard let through. */
export async function startOrders(adapter: Adapter, guard: Guard): Promise<RunningService> {
  // The version that admitted this request (not whatever is in force by the time the handler runs).
  const answer = (id: string | undefined, body?: unknown) => ({ ok: true, id: id ?? null, body: body ?? null, policyVersion: currentAdmission()?.policyVersion ?? null });
  let server: Server;
  let closeApp: () => Promise<void> = async () => {};

  if (adapter === 'fastify') {
    const app = Fastify({ https: guard.tlsOptions(), logger: false });
    // Registered before the plugin, so the guard never saw it: it must be unreachable, not open.
    app.get('/internal/debug', async () => ({ secret: true }));
    await app.register(lockstep, { guard });
    app.get('/health', { config: { lockstep: { public: true } } }, async () => ({ ok: true }));
    app.post('/orders', {
      config: { lockstep: { action: 'orders:create' } },
      schema: { body: { type: 'object', additionalProperties: false, required: ['item', 'quantity'], properties: { item: { type: 'string', minLength: 1, maxLength: 64 }, quantity: { type: 'integer', minimum: 1, maximum: 100 } } } },
    }, async (request) => answer(undefined, request.body));
    app.get('/orders/:id', { config: { lockstep: { action: 'orders:read' } } }, async (request) => answer((request.params as { id: string }).id));
    app.delete('/orders/:id', { config: { lockstep: { action: 'orders:delete' } } }, async (request) => answer((request.params as { id: string }).id));
    app.get('/admin/stats', async () => ({ secret: true }));
    await app.listen({ host: '127.0.0.1', port: 0 });
    server = app.server as unknown as Server;
    closeApp = () => app.close();
  } else if (adapter === 'express') {
    const app = express();
    app.use(lockstepExpress(guard, {
      'GET /health': { public: true },
      'POST /orders': { action: 'orders:create', body: z.object(OrderBody).strict() },
      'GET /orders/:id': { action: 'orders:read' },
      'DELETE /orders/:id': { action: 'orders:delete' },
      'GET /admin/stats': {},
    }));
    app.get('/health', (_req, res) => { res.json({ ok: true }); });
    app.post('/orders', (req, res) => { res.json(answer(undefined, req.body)); });
    app.get('/orders/:id', (req, res) => { res.json(answer(req.params.id)); });
    app.delete('/orders/:id', (req, res) => { res.json(answer(req.params.id)); });
    app.get('/admin/stats', (_req, res) => { res.json({ secret: true }); });
    app.get('/internal/debug', (_req, res) => { res.json({ secret: true }); });
    server = guard.createServer(app);
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  } else {
    const handler = lockstepHttp(guard, {
      'GET /health': { public: true },
      'POST /orders': { action: 'orders:create', body: z.object(OrderBody).strict() },
      'GET /orders/:id': { action: 'orders:read' },
      'DELETE /orders/:id': { action: 'orders:delete' },
      'GET /admin/stats': {},
    }, (req, res, { params, body }) => {
      const payload = req.url === '/health' ? { ok: true } : req.url?.startsWith('/admin') || req.url?.startsWith('/internal') ? { secret: true } : answer(params.id, body);
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(JSON.stringify(payload));
    });
    server = guard.createServer(handler);
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  }
  const port = (server.address() as AddressInfo).port;
  return {
    url: `https://127.0.0.1:${port}`,
    port,
    guard,
    async close() {
      if (adapter === 'fastify') await closeApp();
      else {
        server.closeAllConnections();
        await new Promise<void>((resolve) => server.close(() => resolve()));
      }
    },
  };
}

/** Collects decision events so a test can find the one for a response's request id. */
export function recordDecisions(): { events: DecisionEvent[]; byRequestId(id: string): DecisionEvent | undefined; stop(): void } {
  const events: DecisionEvent[] = [];
  const stop = subscribeDecisions((event) => events.push(event));
  return { events, byRequestId: (id) => events.findLast((event) => event.requestId === id), stop };
}
