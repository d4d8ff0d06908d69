/**
 * Express dispatch, numbers and the remaining doors, each over real mTLS:
 * - Express runs the route the guard decided, or none (table order ≠ registration order, a method
 *   or URL rewritten after the guard, the app's own HEAD handlers, sub-routers, non-string paths,
 *   req.route set by the app);
 * - the Express table is matched with the app's routing settings, and a wildcard param is one path;
 * - Express mounted under a prefix refuses to serve instead of guarding part of the app;
 * - bodies with numbers JavaScript cannot hold are refused on every adapter (and Fastify's coerced
 *   query strings cannot make Infinity either);
 * - Fastify says at start-up which routes refuse any body, and the refusal says how to accept one;
 * - a Fastify child scope's error handler cannot answer a request the guard refused;
 * - guard.attach reports an 'upgrade' listener (WebSocket upgrades bypass the request pipeline);
 * - a scan's Txn-Token is refused from anyone but a scanner.
 */
import assert from 'node:assert/strict';
import { createServer as createHttpsServer, type Server } from 'node:https';
import type { AddressInfo } from 'node:net';
import { after, before, describe, it } from 'node:test';
import express, { type Express, type NextFunction, type Request, type RequestHandler, type Response } from 'express';
import Fastify, { type FastifyInstance } from 'fastify';
import { z } from 'zod';
import { rawTlsRequest } from '@lockstep/testkit';
import { currentAdmission, GuardError, type Guard, type GuardLogger } from '../src/index.ts';
import type { Admission } from '../src/pipeline.ts';
import { lockstep } from '../src/adapters/fastify.ts';
import { lockstepExpress } from '../src/adapters/express.ts';
import { lockstepHttp } from '../src/adapters/node-http.ts';
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
  type DecisionRecorder,
  type HandlerCall,
  type Observed,
  type World,
} from './fixture.ts';

const SCANNER = `spiffe://${TRUST_DOMAIN}/scanner/ci`;
const GATEWAY = `spiffe://${TRUST_DOMAIN}/svc/gateway`;
const JSON_TYPE = { 'content-type': 'application/json' };

let w: World;
let decisions: DecisionRecorder;
before(async () => {
  w = await world();
  decisions = recordDecisions();
});
after(() => decisions.stop());

function recordingLogger(): GuardLogger & { lines: string[] } {
  const lines: string[] = [];
  const push = (level: string) => (message: string) => void lines.push(`${level} ${message}`);
  return { lines, info() {}, warn: push('warn'), error: push('error') };
}

/**
 * The details of the refusals the pipeline records (they go to the audit trail and logs, never to
 * the caller): a spy that calls through, so the guard under test is unchanged.
 */
function recordRefusalDetails(guard: Guard): string[] {
  const details: string[] = [];
  const { pipeline } = guard;
  const { refuseAdmitted, refuseEarly, admit } = pipeline;
  pipeline.refuseAdmitted = (admission, error) => {
    details.push(error.detail);
    return refuseAdmitted(admission, error);
  };
  pipeline.refuseEarly = (request, route, error) => {
    details.push(error.detail);
    return refuseEarly(request, route, error);
  };
  pipeline.admit = (request, route, params?) => {
    const noted = (admission: Admission): Admission => {
      if (admission.refusal !== null) details.push(admission.refusal.detail);
      return admission;
    };
    const admitted = admit(request, route, params);
    return admitted instanceof Promise ? admitted.then(noted) : noted(admitted);
  };
  return details;
}

/** A call log and a state that a test's handlers write to. */
function watched(): Observed & { calls: HandlerCall[]; orders: Map<string, unknown>; note(what: string): void } {
  const calls: HandlerCall[] = [];
  const note = (what: string) => {
    calls.push({ method: what, url: '', requestId: currentAdmission()?.requestId ?? null });
  };
  return { calls, orders: new Map(), note };
}

async function listen(server: Server): Promise<string> {
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return `https://127.0.0.1:${(server.address() as AddressInfo).port}`;
}

async function closeServer(server: Server): Promise<void> {
  server.closeAllConnections();
  await new Promise<void>((resolve) => server.close(() => resolve()));
}

/** An Express app behind `guard`, over mTLS; `build` registers the guard and the app's routes. */
async function withExpress(
  guard: Guard,
  build: (app: Express) => void,
  run: (url: string) => Promise<void>,
): Promise<void> {
  const app = express();
  build(app);
  const server = guard.createServer(app);
  try {
    await run(await listen(server));
  } finally {
    await closeServer(server);
    await guard.close();
  }
}

async function listenFastify(app: FastifyInstance): Promise<string> {
  await app.listen({ host: '127.0.0.1', port: 0 });
  return `https://127.0.0.1:${(app.server.address() as AddressInfo).port}`;
}

/** The audit events of one request, in order. */
function eventsOf(requestId: string) {
  return decisions.events.filter((event) => event.requestId === requestId);
}

describe('Express runs the route the guard decided, or none', () => {
  it('refuses a route the app registered before the one the table matched first, and says so once', async () => {
    const logger = recordingLogger();
    const guard = await guardFor(w, { logger });
    const details = recordRefusalDetails(guard);
    const observed = watched();
    const client = w.client(w.svids.gateway);
    await withExpress(
      guard,
      (app) => {
        app.use(
          lockstepExpress(guard, {
            'GET /orders/:id': { action: 'orders:read' }, // customers may read an order
            'GET /orders/export': { action: 'orders:delete' }, // admins only
          }),
        );
        app.get('/orders/export', (_request, response) => {
          observed.note('export');
          response.json({ all: 'orders' });
        });
        app.get('/orders/:id', (request, response) => {
          observed.note(`read ${request.params.id}`);
          response.json({ id: request.params.id });
        });
        // Neither may run for a refused request, nor write an answer of their own.
        app.use((_error: unknown, _request: Request, response: Response, _next: NextFunction) => {
          observed.note('error handler');
          response.status(500).send('<!DOCTYPE html><title>Error</title>');
        });
        app.use((_request, response) => {
          observed.note('not found');
          response.status(404).send('<!DOCTYPE html><title>Not found</title>');
        });
      },
      async (url) => {
        const headers = { 'txn-token': await w.customerToken() };
        const exportOrders = () => client.request(`${url}/orders/export`, { headers });
        for (let i = 0; i < 2; i++) {
          const { event } = await expectRefused(observed, decisions, exportOrders, 404, 'LOCKSTEP_ERR_ROUTE_UNKNOWN');
          const [decided, refused] = eventsOf(event.requestId);
          assert.equal(decided?.decision, 'allow', 'decided first (as the table matched it)…');
          assert.equal(decided?.route, '/orders/:id');
          const why = '…then refused when Express dispatched another route';
          assert.equal(refused?.reason, 'LOCKSTEP_ERR_ROUTE_UNKNOWN', why);
        }
        const named = /decided GET \/orders\/:id \(orders:read\) but Express dispatched GET \/orders\/export/;
        assert.match(details.at(-1) ?? '', named);
        const logged = logger.lines.filter((line) => line.includes('Express dispatched GET /orders/export'));
        assert.equal(logged.length, 1, `logged once per pair of routes:\n${logger.lines.join('\n')}`);
        assert.match(logged[0] ?? '', /^error .*same order as the app registers them/);

        const read = await client.request(`${url}/orders/7`, { headers });
        assert.equal(read.status, 200, read.text);
        assert.deepEqual(read.json(), { id: '7' });
        const head = await client.request(`${url}/orders/8`, { method: 'HEAD', headers });
        assert.equal(head.status, 200, 'HEAD served by the GET route is the decided route');
        assert.deepEqual(
          observed.calls.map((call) => call.method),
          ['read 7', 'read 8'],
        );
      },
    );
    await client.close();
  });

  it('refuses when a middleware after the guard rewrites the method or the URL', async () => {
    const guard = await guardFor(w);
    const observed = watched();
    observed.orders.set('7', { item: 'tea' });
    const owners: Record<string, string> = { 7: 'alice', 8: 'bob' };
    const client = w.client(w.svids.gateway);
    await withExpress(
      guard,
      (app) => {
        app.use(
          lockstepExpress(guard, {
            'GET /orders/:id': { action: 'orders:read', owner: ({ id }) => owners[id ?? ''] ?? null },
            'DELETE /orders/:id': { action: 'orders:delete' },
            'GET /admin/stats': {},
          }),
        );
        app.use((request, _response, next) => {
          const override = request.headers['x-http-method-override'];
          if (typeof override === 'string') request.method = override;
          const rewrite = request.headers['x-rewrite'];
          if (typeof rewrite === 'string') request.url = rewrite;
          next();
        });
        app.get('/orders/:id', (request, response) => {
          observed.note(`read ${request.params.id}`);
          response.json({ id: request.params.id });
        });
        app.delete('/orders/:id', (request, response) => {
          observed.note('delete');
          observed.orders.delete(request.params.id);
          response.json({ deleted: request.params.id });
        });
        app.get('/admin/stats', (_request, response) => {
          observed.note('admin');
          response.json({ secret: true });
        });
      },
      async (url) => {
        const token = await w.customerToken();
        const get = (headers: Record<string, string>) => () =>
          client.request(`${url}/orders/7`, { headers: { 'txn-token': token, ...headers } });
        const code = 'LOCKSTEP_ERR_ROUTE_UNKNOWN';
        await expectRefused(observed, decisions, get({ 'x-http-method-override': 'DELETE' }), 404, code);
        assert.ok(observed.orders.has('7'), 'the order was not deleted');
        await expectRefused(observed, decisions, get({ 'x-rewrite': '/admin/stats' }), 404, code);
        // The same route, another object: the owner rule was checked for order 7, not 8.
        await expectRefused(observed, decisions, get({ 'x-rewrite': '/orders/8' }), 404, code);
        const plain = await get({})();
        assert.equal(plain.status, 200, plain.text);
        assert.deepEqual(
          observed.calls.map((call) => call.method),
          ['read 7'],
        );
      },
    );
    await client.close();
  });

  it('serves a request whose URL a middleware rewrote to other params, when the route has no owner rule', async () => {
    // Only an owner rule makes the params part of the decision: GET /orders/:id was decided for any id.
    const guard = await guardFor(w);
    const observed = watched();
    const client = w.client(w.svids.gateway);
    await withExpress(
      guard,
      (app) => {
        app.use(lockstepExpress(guard, { 'GET /orders/:id': { action: 'orders:read' } }));
        app.use((request, _response, next) => {
          if (request.url === '/orders/7') request.url = '/orders/8';
          next();
        });
        app.get('/orders/:id', (request, response) => {
          observed.note(`read ${request.params.id}`);
          response.json({ id: request.params.id });
        });
      },
      async (url) => {
        const read = await client.request(`${url}/orders/7`, { headers: { 'txn-token': await w.customerToken() } });
        assert.equal(read.status, 200, read.text);
        assert.deepEqual(read.json(), { id: '8' });
        assert.deepEqual(
          observed.calls.map((call) => call.method),
          ['read 8'],
        );
      },
    );
    await client.close();
  });

  it('refuses a request whose method a middleware rewrote to HEAD: the GET route is not the POST decided', async () => {
    const guard = await guardFor(w);
    const observed = watched();
    await withExpress(
      guard,
      (app) => {
        app.use(
          lockstepExpress(guard, {
            'POST /orders/:id': { action: 'orders:create' }, // customers may
            'GET /orders/:id': { action: 'orders:delete' }, // admins only
          }),
        );
        app.use((request, _response, next) => {
          if (request.headers['x-method-override'] === 'HEAD') request.method = 'HEAD';
          next();
        });
        // Express serves HEAD with the GET route.
        app.get('/orders/:id', (request, response) => {
          observed.note(`read ${request.params.id}`);
          response.json({ id: request.params.id });
        });
      },
      async (url) => {
        // Read raw, on a connection the server closes: the answer to a request rewritten to HEAD has no
        // body, whatever its content-length says.
        const lines = [
          'POST /orders/7 HTTP/1.1',
          'host: orders.test',
          `txn-token: ${await w.customerToken()}`,
          'x-method-override: HEAD',
          'content-length: 0',
          'connection: close',
        ];
        const raw = `${lines.join('\r\n')}\r\n\r\n`;
        const { chainPem: certPem, keyPem } = w.svids.gateway;
        const port = Number(new URL(url).port);
        const result = await rawTlsRequest({ host: '127.0.0.1', port, caPem: w.ca.bundlePem, certPem, keyPem, raw });
        assert.equal(typeof result, 'string', JSON.stringify(result));
        const answer = parseRawAnswer(String(result));
        assert.deepEqual([answer.status, answer.headers['lockstep-error']], [404, 'LOCKSTEP_ERR_ROUTE_UNKNOWN']);
        const events = eventsOf(String(answer.headers['lockstep-request-id']));
        assert.deepEqual(
          events.map((event) => [event.decision, event.reason]),
          [
            ['allow', 'LOCKSTEP_ALLOW'],
            ['deny', 'LOCKSTEP_ERR_ROUTE_UNKNOWN'],
          ],
        );
        await settle();
        assert.deepEqual(observed.calls, [], 'no handler ran');
      },
    );
  });

  it('refuses HEAD answered by a HEAD handler of the app when the table declares only GET for it', async () => {
    const guard = await guardFor(w);
    const observed = watched();
    const client = w.client(w.svids.gateway);
    await withExpress(
      guard,
      (app) => {
        app.use(
          lockstepExpress(guard, {
            'GET /orders/:id': { action: 'orders:read' },
            'GET /items/:id': { action: 'orders:read' },
            'HEAD /items/:id': { action: 'orders:read' },
          }),
        );
        const note = (what: string) => (_request: Request, response: Response) => {
          observed.note(what);
          response.json({});
        };
        app.head('/orders/:id', note('head order'));
        app.get('/orders/:id', note('read order'));
        app.head('/items/:id', note('head item'));
      },
      async (url) => {
        const headers = { 'txn-token': await w.customerToken() };
        const send = (method: 'GET' | 'HEAD', path: string) => () =>
          client.request(`${url}${path}`, { method, headers });
        const code = 'LOCKSTEP_ERR_ROUTE_UNKNOWN';
        await expectRefused(observed, decisions, send('HEAD', '/orders/7'), 404, code, { head: true });
        assert.equal((await send('GET', '/orders/7')()).status, 200);
        assert.equal((await send('HEAD', '/items/7')()).status, 200, 'the fix: declare HEAD for the route');
        assert.deepEqual(
          observed.calls.map((call) => call.method),
          ['read order', 'head item'],
        );
      },
    );
    await client.close();
  });

  it('still checks the route Express runs after a middleware set req.route itself (null, a string)', async () => {
    const guard = await guardFor(w);
    const observed = watched();
    const client = w.client(w.svids.gateway);
    await withExpress(
      guard,
      (app) => {
        app.use(
          lockstepExpress(guard, {
            'GET /orders/:id': { action: 'orders:read' },
            'GET /orders/export': { action: 'orders:delete' },
          }),
        );
        // App code that clears req.route, or puts a label there for its logs.
        app.use((request, _response, next) => {
          const value = request.headers['x-route'];
          if (value === 'null') request.route = null;
          if (value === 'label') request.route = 'orders';
          next();
        });
        app.get('/orders/export', (_request, response) => {
          observed.note('export');
          response.json({ all: 'orders' });
        });
        app.get('/orders/:id', (request, response) => {
          observed.note(`read ${request.params.id}`);
          response.json({ id: request.params.id });
        });
      },
      async (url) => {
        const token = await w.customerToken();
        for (const value of ['null', 'label']) {
          const headers = { 'txn-token': token, 'x-route': value };
          const read = await client.request(`${url}/orders/7`, { headers });
          assert.equal(read.status, 200, `x-route: ${value}: ${read.text}`);
          const exportOrders = () => client.request(`${url}/orders/export`, { headers });
          await expectRefused(observed, decisions, exportOrders, 404, 'LOCKSTEP_ERR_ROUTE_UNKNOWN');
        }
        assert.deepEqual(
          observed.calls.map((call) => call.method),
          ['read 7', 'read 7'],
        );
      },
    );
    await client.close();
  });

  it('checks routes of sub-routers with their mount paths, and a refusal there is the answer', async () => {
    const guard = await guardFor(w);
    const observed = watched();
    let handedToErrorHandler: unknown;
    const client = w.client(w.svids.gateway);
    await withExpress(
      guard,
      (app) => {
        app.set('env', 'test'); // Express's final handler would print the error handler's failure to write
        app.use(
          lockstepExpress(guard, {
            'GET /api/orders/:id': { action: 'orders:read' },
            'GET /api/orders/export': { action: 'orders:delete' },
            'GET /tenants/:tenant/orders/:id': { action: 'orders:read' },
          }),
        );
        const api = express.Router();
        api.get('/orders/export', (_request, response) => {
          observed.note('export');
          response.json({ all: 'orders' });
        });
        api.get('/orders/:id', (request, response) => {
          observed.note(`read ${request.params.id}`);
          response.json({ id: request.params.id });
        });
        app.use('/api', api);
        const tenants = express.Router({ mergeParams: true });
        tenants.get('/orders/:id', (request, response) => {
          observed.note('tenant read');
          response.json(request.params);
        });
        app.use('/tenants/:tenant', tenants);
        // Must not run: the outer router carries on after the sub-router unless an error stops it.
        app.use((_request, response, next) => {
          observed.note('after the sub-router');
          if (response.headersSent) next();
          else response.status(404).send('<!DOCTYPE html><title>Not found</title>');
        });
        // Runs for the refused request (Express hands the error on) but cannot answer: the refusal is sent.
        app.use((error: unknown, _request: Request, response: Response, _next: NextFunction) => {
          handedToErrorHandler = error;
          response.status(500).send('<!DOCTYPE html><title>Error</title>');
        });
      },
      async (url) => {
        const headers = { 'txn-token': await w.customerToken() };
        const exportOrders = () => client.request(`${url}/api/orders/export`, { headers });
        const { answer } = await expectRefused(observed, decisions, exportOrders, 404, 'LOCKSTEP_ERR_ROUTE_UNKNOWN');
        assert.equal(answer.headers.connection, 'close', 'Express closes the connection after an error: said so');
        // What an error handler logs: the guard's refusal, not a TypeError that looks like a bug of the app.
        assert.ok(handedToErrorHandler instanceof GuardError, `the error handler got ${String(handedToErrorHandler)}`);
        assert.deepEqual([handedToErrorHandler.code, handedToErrorHandler.status], ['LOCKSTEP_ERR_ROUTE_UNKNOWN', 404]);
        for (const path of ['/api/orders/7', '/API/orders/7']) {
          const read = await client.request(`${url}${path}`, { headers });
          assert.equal(read.status, 200, `${path}: ${read.text}`);
        }
        const tenant = await client.request(`${url}/tenants/acme/orders/9`, { headers });
        assert.equal(tenant.status, 200, tenant.text);
        assert.deepEqual(tenant.json(), { tenant: 'acme', id: '9' });
        assert.deepEqual(
          observed.calls.map((call) => call.method),
          ['read 7', 'read 7', 'tenant read'],
        );
      },
    );
    await client.close();
  });

  it('refuses a route registered with an array or RegExp path: it equals no table template', async () => {
    const guard = await guardFor(w);
    const observed = watched();
    const client = w.client(w.svids.gateway);
    await withExpress(
      guard,
      (app) => {
        app.use(
          lockstepExpress(guard, {
            'GET /orders/:id': { action: 'orders:read' },
            'GET /reports/:n': { action: 'orders:read' },
          }),
        );
        app.get(['/orders/:id', '/o/:id'], (_request, response) => {
          observed.note('array');
          response.json({});
        });
        app.get(/^\/reports\/(\d+)$/, (_request, response) => {
          observed.note('regexp');
          response.json({});
        });
      },
      async (url) => {
        const headers = { 'txn-token': await w.customerToken() };
        for (const path of ['/orders/7', '/reports/3']) {
          const get = () => client.request(`${url}${path}`, { headers });
          await expectRefused(observed, decisions, get, 404, 'LOCKSTEP_ERR_ROUTE_UNKNOWN');
        }
      },
    );
    await client.close();
  });
});

describe('Express: the table is matched the way the app routes', () => {
  const settings = [
    { setting: 'case sensitive routing', unknown: '/ORDERS/7' },
    { setting: 'strict routing', unknown: '/orders/7/' },
  ];
  for (const { setting, unknown } of settings) {
    it(`with ${setting} enabled, ${unknown} is an unknown route (and /orders/7 is served)`, async () => {
      const guard = await guardFor(w);
      const observed = watched();
      const client = w.client(w.svids.gateway);
      await withExpress(
        guard,
        (app) => {
          app.enable(setting);
          app.use(lockstepExpress(guard, { 'GET /orders/:id': { action: 'orders:read' } }));
          app.get('/orders/:id', (request, response) => {
            observed.note(`read ${request.params.id}`);
            response.json({ id: request.params.id });
          });
          // Where a request goes that Express's router matches to no route, were the guard to let it through.
          app.use((_request, response) => {
            observed.note('not found');
            response.status(404).json({ app: 'not found' });
          });
        },
        async (url) => {
          const headers = { 'txn-token': await w.customerToken() };
          const get = (path: string) => () => client.request(`${url}${path}`, { headers });
          await expectRefused(observed, decisions, get(unknown), 404, 'LOCKSTEP_ERR_ROUTE_UNKNOWN');
          const read = await get('/orders/7')();
          assert.equal(read.status, 200, read.text);
          assert.deepEqual(
            observed.calls.map((call) => call.method),
            ['read 7'],
          );
        },
      );
      await client.close();
    });
  }

  it('gives the owner rule a wildcard param as the path it matched (a/b), and serves the route', async () => {
    const guard = await guardFor(w);
    const observed = watched();
    const looked: unknown[] = [];
    const client = w.client(w.svids.gateway);
    await withExpress(
      guard,
      (app) => {
        app.use(
          lockstepExpress(guard, {
            'GET /files/*path': {
              action: 'orders:read',
              owner: (params) => {
                looked.push({ ...params });
                return 'alice';
              },
            },
          }),
        );
        app.get('/files/*path', (request, response) => {
          observed.note('file');
          response.json({ path: request.params.path });
        });
      },
      async (url) => {
        const read = await client.request(`${url}/files/a/b`, { headers: { 'txn-token': await w.customerToken() } });
        assert.equal(read.status, 200, read.text);
        assert.deepEqual(read.json(), { path: ['a', 'b'] }, 'Express hands the handler the segments');
        assert.deepEqual(looked, [{ path: 'a/b' }]);
        assert.deepEqual(
          observed.calls.map((call) => call.method),
          ['file'],
        );
      },
    );
    await client.close();
  });
});

const ORDERS_READ = { 'GET /orders/:id': { action: 'orders:read' } } as const;

/** A sub-app guarded at its own root, serving `read` at GET /orders/:id. */
function subApp(guard: Guard, read: RequestHandler): Express {
  const api = express();
  api.use(lockstepExpress(guard, ORDERS_READ));
  api.get('/orders/:id', read);
  return api;
}

describe('Express mounted under a prefix', () => {
  // How the app puts the guard under "/api". Mounting the app back into the sub-app throws (Express:
  // "Cyclic __proto__ value"), but only after it set the app's parent: an app that catches that error
  // has a cycle of parents, and the guard's climb to its root must still end.
  const mounts: Array<[string, (app: Express, guard: Guard, api: RequestHandler) => void]> = [
    [
      'as middleware under a prefix',
      (app, guard, read) => {
        app.use('/api', lockstepExpress(guard, ORDERS_READ));
        app.get('/api/orders/:id', read);
      },
    ],
    [
      'in a sub-app under a prefix (the parent app is refused too)',
      (app, guard, read) => {
        app.use('/api', subApp(guard, read));
      },
    ],
    [
      'in a sub-app under a prefix, its parents in a cycle',
      (app, guard, read) => {
        const api = subApp(guard, read);
        app.use('/api', api);
        assert.throws(() => api.use('/loop', app), /Cyclic/);
      },
    ],
  ];
  for (const [how, mount] of mounts) {
    it(`${how}: refuses every request with 500, audited, and logs once how to mount it`, async () => {
      const logger = recordingLogger();
      const guard = await guardFor(w, { logger });
      const observed = watched();
      const client = w.client(w.svids.gateway);
      await withExpress(
        guard,
        (app) => {
          mount(app, guard, (_request, response) => {
            observed.note('api read');
            response.json({});
          });
          app.get('/admin/stats', (_request, response) => {
            observed.note('admin');
            response.json({ secret: true });
          });
        },
        async (url) => {
          const headers = { 'txn-token': await w.customerToken() };
          for (const path of ['/api/orders/7', '/admin/stats', '/api/orders/8']) {
            const get = () => client.request(`${url}${path}`, { headers });
            await expectRefused(observed, decisions, get, 500, 'LOCKSTEP_ERR_INTERNAL');
          }
          const logged = logger.lines.filter((line) => line.includes('mounted under "/api"'));
          assert.equal(logged.length, 1, logger.lines.join('\n'));
          assert.match(logged[0] ?? '', /^error .*mount on the app root: app\.use\(lockstepExpress\(guard, routes\)\)/);
        },
      );
      await client.close();
    });
  }

  it('refuses the requests already inside the app when it finds itself mis-mounted, and logs once', async () => {
    const logger = recordingLogger();
    const guard = await guardFor(w, { logger });
    const observed = watched();
    const client = w.client(w.svids.gateway);
    let app: Express | undefined;
    const released = Promise.withResolvers<void>();
    const bothInside = Promise.withResolvers<void>();
    let inside = 0;
    await withExpress(
      guard,
      (built) => {
        app = built;
        // Holds the first two requests until both are inside the app.
        built.use((_request, _response, next) => {
          if (++inside === 2) bothInside.resolve();
          void released.promise.then(() => next());
        });
        built.use('/api', lockstepExpress(guard, { 'GET /orders/:id': { action: 'orders:read' } }));
        built.get('/api/orders/:id', (_request, response) => {
          observed.note('api read');
          response.json({});
        });
      },
      async (url) => {
        const headers = { 'txn-token': await w.customerToken() };
        const sent = ['/api/orders/7', '/api/orders/8'].map((path) => client.request(`${url}${path}`, { headers }));
        await bothInside.promise;
        released.resolve();
        for (const answer of await Promise.all(sent)) {
          const refusal = [answer.status, answer.headers['lockstep-error']];
          assert.deepEqual(refusal, [500, 'LOCKSTEP_ERR_INTERNAL'], answer.text);
          const events = eventsOf(String(answer.headers['lockstep-request-id']));
          assert.deepEqual(
            events.map((event) => event.reason),
            ['LOCKSTEP_ERR_INTERNAL'],
          );
        }
        await settle();
        assert.deepEqual(observed.calls, [], 'no handler ran');
        const logged = logger.lines.filter((line) => line.includes('mounted under "/api"'));
        assert.equal(logged.length, 1, logger.lines.join('\n'));
        const refusing = app?.router.stack.filter((layer: { name?: string }) => layer.name === 'lockstepMisMounted');
        assert.equal(refusing?.length, 1, 'one refusing layer, first in the app');
        assert.equal(app?.router.stack[0]?.name, 'lockstepMisMounted');
      },
    );
    await client.close();
  });
});

describe('numbers JavaScript cannot hold', () => {
  for (const adapter of adapters) {
    it(`are refused in a body, 400, on ${adapter}`, async () => {
      const guard = await guardFor(w);
      const details = recordRefusalDetails(guard);
      const service = await startOrders(adapter, guard);
      const client = w.client(w.svids.gateway);
      try {
        const headers = { 'txn-token': await w.customerToken(), ...JSON_TYPE };
        const post = (body: string) => () => client.request(`${service.url}/orders`, { method: 'POST', headers, body });
        for (const body of [
          '{"item":"tea","quantity":1,"meta":{"amount":1e400}}',
          '{"item":"tea","quantity":1,"meta":{"id":90071992547409931}}',
          '{"item":"tea","quantity":1,"meta":{"tiny":1e-400}}',
          '{"item":"tea","quantity":1e400}',
        ]) {
          await expectRefused(service, decisions, post(body), 400, 'LOCKSTEP_ERR_INPUT_INVALID');
          assert.match(details.at(-1) ?? '', /^number-range: .*RFC 7493/, body);
        }
        const exact = await post('{"item":"tea","quantity":1,"meta":{"id":9007199254740991,"x":-2.5e-3}}')();
        assert.equal(exact.status, 200, exact.text);
        const created = { item: 'tea', quantity: 1, meta: { id: 9007199254740991, x: -0.0025 } };
        assert.deepEqual([...service.orders.values()], [created]);
      } finally {
        await client.close();
        await service.close();
        await guard.close();
      }
    });
  }

  it('never reach a Fastify handler as Infinity, from a body or a coerced query string', async () => {
    const guard = await guardFor(w);
    const app = Fastify({ https: guard.tlsOptions() });
    await app.register(lockstep, { guard });
    const observed = watched();
    const positive = { type: 'number', exclusiveMinimum: 0 };
    const amount = {
      type: 'object',
      additionalProperties: false,
      required: ['amount'],
      properties: { amount: positive },
    };
    const create = { lockstep: { action: 'orders:create' } };
    app.post('/orders', { config: create, schema: { body: amount } }, async (request) => {
      observed.note(`charge ${String((request.body as { amount: number }).amount)}`);
      return { ok: true };
    });
    const limit = { type: 'object', properties: { limit: { type: 'number' } } };
    const read = { lockstep: { action: 'orders:read' } };
    app.get('/orders/:id', { config: read, schema: { querystring: limit } }, async (request) => {
      observed.note(`list ${String((request.query as { limit?: number }).limit)}`);
      return { ok: true };
    });
    const url = await listenFastify(app);
    const client = w.client(w.svids.gateway);
    try {
      const token = await w.customerToken();
      for (const body of ['{"amount":1e400}', '{"amount":90071992547409931}']) {
        const headers = { 'txn-token': token, ...JSON_TYPE };
        const post = () => client.request(`${url}/orders`, { method: 'POST', headers, body });
        await expectRefused(observed, decisions, post, 400, 'LOCKSTEP_ERR_INPUT_INVALID');
      }
      for (const query of ['Infinity', '-Infinity', '1e400']) {
        const get = () => client.request(`${url}/orders/1?limit=${query}`, { headers: { 'txn-token': token } });
        await expectRefused(observed, decisions, get, 400, 'LOCKSTEP_ERR_INPUT_INVALID');
      }
      const fine = await client.request(`${url}/orders/1?limit=5`, { headers: { 'txn-token': token } });
      assert.equal(fine.status, 200, fine.text);
      assert.deepEqual(
        observed.calls.map((call) => call.method),
        ['list 5'],
      );
    } finally {
      await client.close();
      await app.close();
      await guard.close();
    }
  });
});

describe('bodies on routes without a body schema', () => {
  it('Fastify lists such POST/PUT/PATCH routes at start-up; the refusal says how to accept a body', async () => {
    const logger = recordingLogger();
    const guard = await guardFor(w, { logger });
    const details = recordRefusalDetails(guard);
    const app = Fastify({ https: guard.tlsOptions() });
    await app.register(lockstep, { guard });
    const observed = watched();
    const create = { config: { lockstep: { action: 'orders:create' } } };
    app.post('/orders/:id/cancel', create, async () => {
      observed.note('cancel');
      return {};
    });
    const body = { type: 'object', properties: { item: { type: 'string' } } };
    app.put('/orders/:id', { ...create, schema: { body } }, async () => {
      observed.note('put');
      return {};
    });
    const url = await listenFastify(app);
    const client = w.client(w.svids.gateway);
    try {
      const warning = logger.lines.find((line) => line.includes('refuse any body'));
      assert.ok(warning, logger.lines.join('\n'));
      assert.match(warning, /POST \/orders\/:id\/cancel.*schema\.body/);
      assert.doesNotMatch(warning, /PUT \//);
      const headers = { 'txn-token': await w.customerToken(), ...JSON_TYPE };
      const cancel = () => client.request(`${url}/orders/7/cancel`, { method: 'POST', headers, body: '{}' });
      await expectRefused(observed, decisions, cancel, 400, 'LOCKSTEP_ERR_INPUT_INVALID');
      assert.match(details.at(-1) ?? '', /takes no body.*schema\.body on Fastify/);
      const form = () =>
        client.request(`${url}/orders/7`, {
          method: 'PUT',
          headers: { ...headers, 'content-type': 'application/x-www-form-urlencoded' },
          body: 'item=tea',
        });
      await expectRefused(observed, decisions, form, 415, 'LOCKSTEP_ERR_UNSUPPORTED_MEDIA_TYPE');
    } finally {
      await client.close();
      await app.close();
      await guard.close();
    }
  });

  it('Express: the refusal of a body on a route without one says body: zodSchema', async () => {
    const guard = await guardFor(w);
    const details = recordRefusalDetails(guard);
    const observed = watched();
    const client = w.client(w.svids.gateway);
    await withExpress(
      guard,
      (app) => {
        app.use(
          lockstepExpress(guard, {
            'POST /orders/:id/cancel': { action: 'orders:create' },
            'POST /orders': { action: 'orders:create', body: z.object({ item: z.string() }).strict() },
          }),
        );
        app.post('/orders/:id/cancel', (_request, response) => {
          observed.note('cancel');
          response.json({});
        });
      },
      async (url) => {
        const headers = { 'txn-token': await w.customerToken(), ...JSON_TYPE };
        const cancel = () => client.request(`${url}/orders/7/cancel`, { method: 'POST', headers, body: '{}' });
        await expectRefused(observed, decisions, cancel, 400, 'LOCKSTEP_ERR_INPUT_INVALID');
        assert.match(details.at(-1) ?? '', /takes no body.*body: zodSchema in an Express or node:http route table/);
      },
    );
    await client.close();
  });
});

describe('answers outside the request pipeline', () => {
  it("Fastify: a child scope's error handler cannot answer a request the guard refused", async () => {
    const guard = await guardFor(w);
    const app = Fastify({ https: guard.tlsOptions() });
    await app.register(lockstep, { guard });
    const observed = watched();
    let errorHandlerRan = false;
    await app.register(async (child) => {
      child.setErrorHandler((_error, _request, reply) => {
        errorHandlerRan = true;
        void reply.code(418).header('x-mine', 'yes').send({ mine: true });
      });
      const read = { config: { lockstep: { action: 'orders:read' } } };
      // App code that fails on bad input: the guard maps a SyntaxError to its 400.
      child.get(
        '/orders/:id',
        {
          ...read,
          preValidation: async (request) => {
            if (request.headers['x-filter'] !== undefined) JSON.parse(String(request.headers['x-filter']));
          },
        },
        async () => {
          observed.note('read');
          return { ok: true };
        },
      );
    });
    const url = await listenFastify(app);
    const client = w.client(w.svids.gateway);
    try {
      const token = await w.customerToken();
      for (const method of ['GET', 'HEAD'] as const) {
        const headers = { 'txn-token': token, 'x-filter': '{' };
        const get = () => client.request(`${url}/orders/7`, { method, headers });
        const head = { head: method === 'HEAD' };
        const { answer } = await expectRefused(observed, decisions, get, 400, 'LOCKSTEP_ERR_INPUT_INVALID', head);
        assert.equal(answer.headers['x-mine'], undefined, "nothing of the error handler's answer");
      }
      assert.equal(errorHandlerRan, true, 'the error handler ran: its answer was replaced');
      const fine = await client.request(`${url}/orders/7`, { headers: { 'txn-token': token } });
      assert.equal(fine.status, 200, fine.text);
      assert.deepEqual(fine.json(), { ok: true });
    } finally {
      await client.close();
      await app.close();
      await guard.close();
    }
  });

  it("guard.attach reports an 'upgrade' listener, present before or added after", async () => {
    const logger = recordingLogger();
    const guard = await guardFor(w, { logger });
    const upgraded: string[] = [];
    const onUpgrade = (request: { url?: string }, socket: { destroy(): void }) => {
      upgraded.push(request.url ?? '');
      socket.destroy();
    };
    const routes = { 'GET /orders/:id': { action: 'orders:read' } };
    const handler = lockstepHttp(guard, routes, (_request, response) => void response.end('{}'));
    const later = guard.createServer(handler);
    const before = createHttpsServer(guard.tlsOptions(), handler);
    before.on('upgrade', onUpgrade);
    const warnings = () => logger.lines.filter((line) => /^warn .*'upgrade' listener/.test(line));
    try {
      assert.equal(warnings().length, 0);
      later.on('upgrade', onUpgrade);
      assert.equal(warnings().length, 1);
      guard.attach(before);
      assert.equal(warnings().length, 2);
      later.on('upgrade', () => {});
      assert.equal(warnings().length, 2, 'once per server');
      // What the warning is about: an Upgrade request without a certificate reaches the listener, not the guard.
      await listen(later);
      const { port } = later.address() as AddressInfo;
      const raw = 'GET /anything HTTP/1.1\r\nhost: x\r\nconnection: upgrade\r\nupgrade: websocket\r\n\r\n';
      await rawTlsRequest({ host: '127.0.0.1', port, caPem: w.ca.bundlePem, raw, idleTimeoutMs: 500 });
      assert.deepEqual(upgraded, ['/anything']);
      assert.match(warnings()[0] ?? '', /does not decide them/);
    } finally {
      await closeServer(later);
      await guard.close();
    }
  });
});

describe("a scan's Txn-Token from anyone but a scanner", () => {
  let scannerSvid: { chainPem: string; keyPem: string };
  before(async () => {
    scannerSvid = await w.ca.issueCert({ uris: [SCANNER] });
  });

  for (const adapter of adapters) {
    it(`is refused 401 LOCKSTEP_ERR_TXN_TOKEN_CLAIMS; from the scanner it is a probe (${adapter})`, async () => {
      const guard = await guardFor(w);
      const details = recordRefusalDetails(guard);
      const service = await startOrders(adapter, guard);
      const workload = w.client(w.svids.gateway);
      const scanner = w.client(scannerSvid);
      try {
        const scanTokens = [
          await w.customerToken({ req_wl: SCANNER }),
          await w.customerToken({ req_wl: GATEWAY, req_wl_chain: [SCANNER] }),
        ];
        for (const token of scanTokens) {
          const replay = () => workload.request(`${service.url}/orders/1`, { headers: { 'txn-token': token } });
          await expectRefused(service, decisions, replay, 401, 'LOCKSTEP_ERR_TXN_TOKEN_CLAIMS');
          assert.match(details.at(-1) ?? '', /issued for a scan .*accepted only from a scanner/);
          const headers = { 'txn-token': token, 'lockstep-probe-as': GATEWAY };
          const probe = await scanner.request(`${service.url}/orders/1`, { headers });
          assert.equal(probe.status, 200, probe.text);
          assert.equal(probe.headers['lockstep-probe'], 'admitted');
        }
        assert.deepEqual(service.calls, [], 'no handler ran');
        const headers = { 'txn-token': await w.customerToken() };
        const ordinary = await workload.request(`${service.url}/orders/1`, { headers });
        assert.equal(ordinary.status, 200, ordinary.text);
      } finally {
        await workload.close();
        await scanner.close();
        await service.close();
        await guard.close();
      }
    });
  }
});
