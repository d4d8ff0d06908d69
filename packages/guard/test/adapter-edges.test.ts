/**
 * What each adapter takes over from its framework, over real mTLS: Fastify's body coercion (off
 * unless a route asks), its hook order, its frameworkErrors and a child scope's error handler;
 * a failing node:http handler; an Express app that mounts something before the guard.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { AddressInfo } from 'node:net';
import type { Server } from 'node:https';
import express from 'express';
import Fastify, { type FastifyInstance } from 'fastify';
import { z } from 'zod';
import { currentAdmission, type Guard, type GuardLogger } from '../src/index.ts';
import { lockstep } from '../src/adapters/fastify.ts';
import { lockstepExpress } from '../src/adapters/express.ts';
import { lockstepHttp } from '../src/adapters/node-http.ts';
import { expectRefused, guardFor, recordDecisions, world, type HandlerCall, type Observed } from './fixture.ts';

function recordingLogger(): GuardLogger & { lines: string[] } {
  const lines: string[] = [];
  const push = (level: string) => (message: string) => void lines.push(`${level} ${message}`);
  return { lines, info() {}, warn: push('warn'), error: push('error') };
}

/** A call log and (empty) state for a service built in the test. */
function watched(): Observed & { calls: HandlerCall[]; note(method: string, url: string): void } {
  const calls: HandlerCall[] = [];
  const note = (method: string, url: string) => {
    calls.push({ method, url, requestId: currentAdmission()?.requestId ?? null });
  };
  return { calls, orders: new Map(), note };
}

async function listen(server: Server): Promise<string> {
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return `https://127.0.0.1:${(server.address() as AddressInfo).port}`;
}

async function listenFastify(app: FastifyInstance): Promise<string> {
  await app.listen({ host: '127.0.0.1', port: 0 });
  return `https://127.0.0.1:${(app.server.address() as AddressInfo).port}`;
}

async function closeServer(server: Server): Promise<void> {
  server.closeAllConnections();
  await new Promise<void>((resolve) => server.close(() => resolve()));
}

const JSON_TYPE = { 'content-type': 'application/json' };

test('Fastify: a body is not coerced ("1" stays a string) unless the route asks with coerceBody', async () => {
  const w = await world();
  const guard = await guardFor(w);
  const app = Fastify({ https: guard.tlsOptions() });
  await app.register(lockstep, { guard });
  const observed = watched();
  const properties = { item: { type: 'string' }, quantity: { type: 'integer' } };
  const schema = { body: { type: 'object', required: ['item', 'quantity'], properties } };
  app.post('/orders', { config: { lockstep: { action: 'orders:create' } }, schema }, async (request) => {
    observed.note('POST', '/orders');
    return { body: request.body };
  });
  const coercing = { lockstep: { action: 'orders:create', coerceBody: true } };
  app.put('/orders', { config: coercing, schema }, async (request) => ({ body: request.body }));
  const url = await listenFastify(app);
  const client = w.client(w.svids.gateway);
  const decisions = recordDecisions();
  try {
    const headers = { 'txn-token': await w.customerToken(), ...JSON_TYPE };
    const body = '{"item":"tea","quantity":"1"}';
    const post = () => client.request(`${url}/orders`, { method: 'POST', headers, body });
    await expectRefused(observed, decisions, post, 400, 'LOCKSTEP_ERR_INPUT_INVALID');
    const coerced = await client.request(`${url}/orders`, { method: 'PUT', headers, body });
    assert.equal(coerced.status, 200, coerced.text);
    assert.deepEqual(coerced.json<{ body: unknown }>().body, { item: 'tea', quantity: 1 });
  } finally {
    decisions.stop();
    await client.close();
    await app.close();
    await guard.close();
  }
});

test('Fastify: the plugin refuses to start after an onRequest hook that could answer before the guard', async () => {
  const w = await world();
  const guard = await guardFor(w);
  const app = Fastify({ https: guard.tlsOptions() });
  app.addHook('onRequest', async (_request, reply) => reply.code(204).send());
  try {
    await assert.rejects(async () => {
      await app.register(lockstep, { guard });
      await app.ready();
    }, /register\(lockstep, \{ guard \}\) before adding any onRequest hook/);
  } finally {
    await app.close().catch(() => {});
    await guard.close();
  }
});

test("Fastify: the app's frameworkErrors are replaced; a URL its router cannot take is decided", async () => {
  const w = await world();
  const logger = recordingLogger();
  const guard = await guardFor(w, { logger });
  let appAnswered = false;
  const app = Fastify({
    https: guard.tlsOptions(),
    frameworkErrors: (_error, _request, reply) => {
      appAnswered = true;
      reply.raw.writeHead(418).end('mine');
    },
  });
  await app.register(lockstep, { guard });
  const observed = watched();
  app.get('/orders/:id', { config: { lockstep: { action: 'orders:read' } } }, async () => {
    observed.note('GET', '/orders/:id');
    return {};
  });
  const url = await listenFastify(app);
  const client = w.client(w.svids.gateway);
  const decisions = recordDecisions();
  try {
    assert.ok(
      logger.lines.some((line) => /frameworkErrors replaced/.test(line)),
      logger.lines.join('\n'),
    );
    const token = await w.customerToken();
    const badUrl = `${url}/orders/%zz`;
    const withToken = () => client.request(badUrl, { headers: { 'txn-token': token } });
    await expectRefused(observed, decisions, withToken, 404, 'LOCKSTEP_ERR_ROUTE_UNKNOWN');
    await expectRefused(observed, decisions, () => client.request(badUrl), 401, 'LOCKSTEP_ERR_TXN_TOKEN_MISSING');
    assert.equal(appAnswered, false);
  } finally {
    decisions.stop();
    await client.close();
    await app.close();
    await guard.close();
  }
});

test("Fastify: a child scope's error handler does not answer a refused body; the guard does", async () => {
  const w = await world();
  const guard = await guardFor(w);
  const app = Fastify({ https: guard.tlsOptions() });
  await app.register(lockstep, { guard });
  const observed = watched();
  let errorHandlerRan = false;
  await app.register(async (child) => {
    child.setErrorHandler((_error, _request, reply) => {
      errorHandlerRan = true;
      void reply.code(200).send({ swallowed: true });
    });
    const properties = { item: { type: 'string' } };
    const body = { type: 'object', additionalProperties: false, required: ['item'], properties };
    child.post('/orders', { config: { lockstep: { action: 'orders:create' } }, schema: { body } }, async () => {
      observed.note('POST', '/orders');
      return {};
    });
  });
  const url = await listenFastify(app);
  const client = w.client(w.svids.gateway);
  const decisions = recordDecisions();
  try {
    const headers = { 'txn-token': await w.customerToken(), ...JSON_TYPE };
    for (const body of ['{"item":7}', '{"item":"tea","item":"coffee"}', '{"item":']) {
      const post = () => client.request(`${url}/orders`, { method: 'POST', headers, body });
      await expectRefused(observed, decisions, post, 400, 'LOCKSTEP_ERR_INPUT_INVALID');
    }
    assert.equal(errorHandlerRan, false);
  } finally {
    decisions.stop();
    await client.close();
    await app.close();
    await guard.close();
  }
});

test('node:http: a failing handler is answered 500 LOCKSTEP_ERR_INTERNAL and audited, no body of its own', async () => {
  const w = await world();
  const logger = recordingLogger();
  const guard: Guard = await guardFor(w, { logger });
  const routes = { 'GET /orders/:id': { action: 'orders:read' } };
  const server = guard.createServer(
    lockstepHttp(guard, routes, async (_request, _response, { params }) => {
      if (params.id === 'sync') throw new Error('boom');
      await Promise.resolve();
      throw new Error('async boom');
    }),
  );
  const url = await listen(server);
  const client = w.client(w.svids.gateway);
  const decisions = recordDecisions();
  try {
    const token = await w.customerToken();
    for (const id of ['sync', 'async']) {
      // The handler runs (that is the point) and records nothing: expectRefused checks the answer and its event.
      const get = () => client.request(`${url}/orders/${id}`, { headers: { 'txn-token': token } });
      const { event } = await expectRefused(watched(), decisions, get, 500, 'LOCKSTEP_ERR_INTERNAL');
      const admitted = decisions.events.find((candidate) => candidate.requestId === event.requestId);
      assert.equal(admitted?.decision, 'allow', 'the admission was audited first');
    }
    assert.ok(logger.lines.some((line) => /request failed after admission/.test(line)));
  } finally {
    decisions.stop();
    await client.close();
    await closeServer(server);
    await guard.close();
  }
});

test('Express: middleware mounted before the guard is reported loudly, once; the guard still decides', async () => {
  const w = await world();
  const logger = recordingLogger();
  const guard = await guardFor(w, { logger });
  const app = express();
  app.use((_request, _response, next) => next());
  const body = z.object({ item: z.string() }).strict();
  app.use(lockstepExpress(guard, { 'POST /orders': { action: 'orders:create', body } }));
  const observed = watched();
  app.post('/orders', (request, response) => {
    observed.note('POST', '/orders');
    response.json({ body: request.body });
  });
  const server = guard.createServer(app);
  const url = await listen(server);
  const client = w.client(w.svids.gateway);
  const decisions = recordDecisions();
  try {
    const options = () => client.request(`${url}/orders`, { method: 'OPTIONS' });
    for (let i = 0; i < 2; i++) {
      await expectRefused(observed, decisions, options, 401, 'LOCKSTEP_ERR_TXN_TOKEN_MISSING');
    }
    const warned = logger.lines.filter((line) => /not the first middleware/.test(line));
    assert.equal(warned.length, 1, `reported once, at the first request:\n${logger.lines.join('\n')}`);
  } finally {
    decisions.stop();
    await client.close();
    await closeServer(server);
    await guard.close();
  }
});
