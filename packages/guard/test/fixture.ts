/**
 * One world for the guard's integration tests: a throw-away CA for trust domain shop.test (and a
 * foreign one), SVIDs for the protected `orders` service and its callers, a Txn-Token minter, the
 * example policies signed into a bundle — and `startOrders(adapter)`, the same orders service behind
 * the Fastify, Express or node:http adapter, over real mTLS on 127.0.0.1.
 */
import { generateKeyPair, exportJWK, type CryptoKey, type JWK } from 'jose';
import { fileURLToPath } from 'node:url';
import type { AddressInfo } from 'node:net';
import assert from 'node:assert/strict';
import type { Server } from 'node:https';
import express from 'express';
import Fastify from 'fastify';
import { z } from 'zod';
import { loadPolicyDir, signBundle, type PolicySet } from '@lockstep/policy';
import {
  createMtlsClient,
  createTestCa,
  createTxnTokenMinter,
  type MtlsClient,
  type Svid,
  type TestCa,
  type TxnTokenMinter,
} from '@lockstep/testkit';
import {
  createGuard,
  currentAdmission,
  subscribeDecisions,
  type DecisionEvent,
  type Guard,
  type GuardErrorCode,
  type GuardOptions,
  type GuardLogger,
} from '../src/index.ts';
import { ERROR_HEADER, REQUEST_ID_HEADER } from '../src/errors.ts';
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
    const [orders, gateway, reports] = await Promise.all(
      ['orders', 'gateway', 'reports'].map((service) => ca.issueSvid({ service })),
    );
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
      customerToken: (claims = {}) =>
        minter.mint({
          sub: 'alice',
          tctx: { roles: ['customer'], tenant: 't1' },
          req_wl: `spiffe://${TRUST_DOMAIN}/svc/gateway`,
          ...claims,
        }),
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
    txnTokenKeys: {
      jwks: w.minter.jwks as GuardOptions['txnTokenKeys'] extends infer T
        ? T extends { jwks: infer J }
          ? J
          : never
        : never,
    },
    policy: { keys: w.policyKey.jwks, bundle: w.bundle },
    logger: silentLogger,
    ...overrides,
  });
}

/** One call of a fixture handler: a refused request must add none. */
export interface HandlerCall {
  readonly method: string;
  readonly url: string;
  /** The admission the handler ran under, when it ran under one. */
  readonly requestId: string | null;
}

/** What a test can watch of a service: the handlers that ran and the state they changed. */
export interface Observed {
  readonly calls: readonly HandlerCall[];
  /** Orders created by POST /orders and removed by DELETE /orders/:id. */
  readonly orders: ReadonlyMap<string, unknown>;
}

export interface RunningService extends Observed {
  url: string;
  port: number;
  guard: Guard;
  /** The HTTPS server itself: tests watch its sockets (how much of a refused body was read). */
  server: Server;
  close(): Promise<void>;
}

// `meta` is free-form on purpose: keys the schema does not look at are the strict parser's alone.
const OrderBody = {
  item: z.string().min(1).max(64),
  quantity: z.number().int().min(1).max(100),
  meta: z.record(z.string(), z.unknown()).optional(),
};

/**
 * The orders service behind `adapter`. Handlers answer with what the guard let through, and every
 * one of them — also those of undeclared and denied routes — records its call first.
 */
export async function startOrders(adapter: Adapter, guard: Guard): Promise<RunningService> {
  const calls: HandlerCall[] = [];
  const orders = new Map<string, unknown>();
  let nextOrder = 0;
  const record = (request: { method?: string | undefined; url?: string | undefined }) => {
    const requestId = currentAdmission()?.requestId ?? null;
    calls.push({ method: request.method ?? '', url: request.url ?? '', requestId });
  };
  const create = (body: unknown) => {
    orders.set(String(++nextOrder), body);
  };
  // The version that admitted this request (not whatever is in force by the time the handler runs).
  const answer = (id: string | undefined, body?: unknown) => ({
    ok: true,
    id: id ?? null,
    body: body ?? null,
    policyVersion: currentAdmission()?.policyVersion ?? null,
  });
  let server: Server;
  let closeApp: () => Promise<void> = async () => {};

  if (adapter === 'fastify') {
    const app = Fastify({ https: guard.tlsOptions(), logger: false });
    // Registered before the plugin, so the guard never saw it: it must be unreachable, not open.
    app.get('/internal/debug', async (request) => {
      record(request);
      return { secret: true };
    });
    await app.register(lockstep, { guard });
    const open = { config: { lockstep: { public: true } } };
    app.get('/health', open, async (request) => {
      record(request);
      return { ok: true };
    });
    // The app's own OPTIONS (CORS preflight) handling: a declared route like any other.
    app.options('/orders', open, async (request, reply) => {
      record(request);
      return reply.code(204).header('allow', 'POST, OPTIONS').send();
    });
    app.post(
      '/orders',
      {
        config: { lockstep: { action: 'orders:create' } },
        schema: {
          body: {
            type: 'object',
            additionalProperties: false,
            required: ['item', 'quantity'],
            properties: {
              item: { type: 'string', minLength: 1, maxLength: 64 },
              quantity: { type: 'integer', minimum: 1, maximum: 100 },
              meta: { type: 'object' },
            },
          },
        },
      },
      async (request) => {
        record(request);
        create(request.body);
        return answer(undefined, request.body);
      },
    );
    app.get('/orders/:id', { config: { lockstep: { action: 'orders:read' } } }, async (request) => {
      record(request);
      return answer((request.params as { id: string }).id);
    });
    app.delete('/orders/:id', { config: { lockstep: { action: 'orders:delete' } } }, async (request) => {
      record(request);
      const { id } = request.params as { id: string };
      orders.delete(id);
      return answer(id);
    });
    app.get('/admin/stats', async (request) => {
      record(request);
      return { secret: true };
    });
    await app.listen({ host: '127.0.0.1', port: 0 });
    server = app.server as unknown as Server;
    closeApp = () => app.close();
  } else if (adapter === 'express') {
    const app = express();
    app.use(
      lockstepExpress(guard, {
        'GET /health': { public: true },
        'OPTIONS /orders': { public: true },
        'POST /orders': { action: 'orders:create', body: z.object(OrderBody).strict() },
        'GET /orders/:id': { action: 'orders:read' },
        'DELETE /orders/:id': { action: 'orders:delete' },
        'GET /admin/stats': {},
      }),
    );
    app.get('/health', (req, res) => {
      record(req);
      res.json({ ok: true });
    });
    app.options('/orders', (req, res) => {
      record(req);
      res.status(204).set('allow', 'POST, OPTIONS').end();
    });
    app.post('/orders', (req, res) => {
      record(req);
      create(req.body);
      res.json(answer(undefined, req.body));
    });
    app.get('/orders/:id', (req, res) => {
      record(req);
      res.json(answer(req.params.id));
    });
    app.delete('/orders/:id', (req, res) => {
      record(req);
      orders.delete(req.params.id);
      res.json(answer(req.params.id));
    });
    app.get('/admin/stats', (req, res) => {
      record(req);
      res.json({ secret: true });
    });
    app.get('/internal/debug', (req, res) => {
      record(req);
      res.json({ secret: true });
    });
    // Whatever reaches the app unmatched is a call too: the guard should have refused it.
    app.use((req, res) => {
      record(req);
      res.status(404).json({ app: 'not found' });
    });
    server = guard.createServer(app);
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  } else {
    const handler = lockstepHttp(
      guard,
      {
        'GET /health': { public: true },
        'OPTIONS /orders': { public: true },
        'POST /orders': { action: 'orders:create', body: z.object(OrderBody).strict() },
        'GET /orders/:id': { action: 'orders:read' },
        'DELETE /orders/:id': { action: 'orders:delete' },
        'GET /admin/stats': {},
      },
      (req, res, { params, body, admission }) => {
        record(req);
        const template = admission.route?.template;
        if (template === '/orders' && req.method === 'OPTIONS') {
          res.writeHead(204, { allow: 'POST, OPTIONS' });
          res.end();
          return;
        }
        if (template === '/orders' && req.method === 'POST') create(body);
        if (template === '/orders/:id' && req.method === 'DELETE') orders.delete(params.id ?? '');
        const payload =
          template === '/health'
            ? { ok: true }
            : template === '/admin/stats'
              ? { secret: true }
              : answer(params.id, body);
        res.writeHead(200, { 'content-type': 'application/json' });
        res.end(JSON.stringify(payload));
      },
    );
    server = guard.createServer(handler);
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  }
  const port = (server.address() as AddressInfo).port;
  return {
    url: `https://127.0.0.1:${port}`,
    port,
    guard,
    server,
    calls,
    orders,
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
export function recordDecisions(): {
  events: DecisionEvent[];
  byRequestId(id: string): DecisionEvent | undefined;
  /** The audit events of one request, in order, as `[decision, reason]`. */
  outcomesOf(id: string): Array<[string, string | null]>;
  stop(): void;
} {
  const events: DecisionEvent[] = [];
  const stop = subscribeDecisions((event) => events.push(event));
  return {
    events,
    byRequestId: (id) => events.findLast((event) => event.requestId === id),
    outcomesOf: (id) => events.filter((event) => event.requestId === id).map((event) => [event.decision, event.reason]),
    stop,
  };
}

/** The two ways the guard's own `admit` can fail, for the adapters' fault tests. */
export const ADMIT_FAILURES = {
  throwing: (): never => {
    throw new Error('key store broken');
  },
  rejecting: (): Promise<never> => Promise.reject(new Error('key store broken')),
};

/**
 * Makes `guard.pipeline.admit` fail with `fail` for the requests `broken` picks; every other request
 * goes through `admit`, the real one (restore it after the test: `guard.pipeline.admit = admit`).
 */
export function breakAdmit(
  guard: Guard,
  admit: Guard['pipeline']['admit'],
  fail: () => never | Promise<never>,
  broken: (...request: Parameters<Guard['pipeline']['admit']>) => boolean,
): void {
  const pipeline = guard.pipeline;
  pipeline.admit = (request, route, params) =>
    broken(request, route, params) ? fail() : admit.call(pipeline, request, route, params);
}

export type DecisionRecorder = ReturnType<typeof recordDecisions>;

/** An HTTP answer as the tests read it (from the mTLS client or a raw response). */
export interface Answer {
  readonly status: number;
  readonly headers: Readonly<Record<string, string | string[] | undefined>>;
  readonly text: string;
}

/** Reads a raw HTTP/1.1 response (rawTlsRequest's text): status line, headers, body. */
export function parseRawAnswer(raw: string): Answer {
  const split = raw.indexOf('\r\n\r\n');
  const [statusLine = '', ...lines] = (split === -1 ? raw : raw.slice(0, split)).split('\r\n');
  const headers: Record<string, string> = {};
  for (const line of lines) {
    const colon = line.indexOf(':');
    if (colon > 0) headers[line.slice(0, colon).trim().toLowerCase()] = line.slice(colon + 1).trim();
  }
  const status = Number(/^HTTP\/1\.[01] (\d{3})/.exec(statusLine)?.[1] ?? NaN);
  return { status, headers, text: split === -1 ? '' : raw.slice(split + 4) };
}

/** How long a test waits for an answer (or a closed connection) before it calls the request hung. */
const PATIENCE_MS = 3000;

/** `promise`, or a failure naming `what` when it has not settled within PATIENCE_MS. */
export async function within<T>(promise: Promise<T>, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_resolve, reject) => {
    const hung = new Error(`${what}: nothing within ${PATIENCE_MS} ms (the request hangs)`);
    timer = setTimeout(() => reject(hung), PATIENCE_MS);
  });
  try {
    return await Promise.race([promise, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

/** Lets a handler that an adapter wrongly falls through to run before the test looks. */
export const settle = () => new Promise((resolve) => setTimeout(resolve, 10));

/**
 * Sends a request that must be refused and proves that the refusal is the pipeline's and that
 * nothing else happened: the catalogue's status, the `lockstep-error` and `lockstep-request-id`
 * headers, a body of exactly `{ error, requestId }` (none for HEAD), the audit event of that request
 * id with the code as reason, no handler call while it was answered, and the state unchanged.
 */
export async function expectRefused(
  service: Observed,
  decisions: DecisionRecorder,
  send: () => Promise<Answer>,
  status: number,
  code: GuardErrorCode,
  options: { head?: boolean } = {},
): Promise<{ answer: Answer; event: DecisionEvent }> {
  const callsBefore = service.calls.length;
  const stateBefore = JSON.stringify([...service.orders]);
  const answer = await send();
  const where = `${answer.status} ${String(answer.headers[ERROR_HEADER] ?? '')}: ${answer.text.slice(0, 300)}`;
  assert.equal(answer.status, status, `expected ${status} ${code}, got ${where}`);
  assert.equal(answer.headers[ERROR_HEADER], code, `lockstep-error header; got ${where}`);
  assert.match(String(answer.headers['content-type']), /^application\/json/);
  const requestId = String(answer.headers[REQUEST_ID_HEADER] ?? '');
  assert.ok(requestId.length > 0, 'the refusal names its request id in a header');
  if (options.head === true) assert.equal(answer.text, '', 'a HEAD refusal has no body');
  else assert.deepEqual(JSON.parse(answer.text), { error: code, requestId }, 'body: exactly { error, requestId }');
  const event = decisions.byRequestId(requestId);
  assert.ok(event, `an audit event for request ${requestId}`);
  assert.equal(event.reason, code);
  assert.equal(event.decision, 'deny');
  assert.equal(event.dryRun, false);
  await settle();
  assert.deepEqual(service.calls.slice(callsBefore), [], 'no handler ran for a refused request');
  assert.equal(JSON.stringify([...service.orders]), stateBefore, 'a refused request changed nothing');
  return { answer, event };
}
