/**
 * The Fastify adapter when something fails or the app gets in the way, over real mTLS: the guard
 * failing before a decision (in onRequest, and for a URL the router cannot take), a request that
 * reaches a handler or the input check without its admission, handlers that throw, the app's own
 * error handlers (at the root, in a child scope) and hooks, a route's own bodyLimit, and whether the
 * connection survives a refusal answered through the error path. Written for what the mutation run
 * on the adapter found untested (docs/mutation.md); faults are injected as in
 * http-adapter-faults.test.ts (nothing from outside the process can make the guard throw).
 */
import assert from 'node:assert/strict';
import type { AddressInfo } from 'node:net';
import { after, afterEach, before, describe, it } from 'node:test';
import Fastify, { type FastifyRequest } from 'fastify';
import { currentAdmission, type Guard, type GuardLogger } from '../src/index.ts';
import { GuardError, REQUEST_ID_HEADER } from '../src/errors.ts';
import { lockstep } from '../src/adapters/fastify.ts';
import type { Admission } from '../src/pipeline.ts';
import {
  ADMIT_FAILURES,
  breakAdmit,
  expectRefused,
  guardFor,
  recordDecisions,
  within,
  world,
  type Answer,
  type DecisionRecorder,
  type HandlerCall,
  type Observed,
  type World,
} from './fixture.ts';
import { connect, rawRequest } from './raw-connection.ts';

let w: World;
let decisions: DecisionRecorder;
before(async () => {
  w = await world();
  decisions = recordDecisions();
});
after(() => decisions.stop());

interface Service {
  readonly url: string;
  readonly port: number;
  readonly guard: Guard;
  /** Every handler call, recorded before the handler does anything else. */
  readonly calls: HandlerCall[];
  readonly orders: Map<string, unknown>;
  /** The guard's error log. */
  readonly errors: string[];
  /** The messages of the errors the app's onError hook saw (as an error reporter would). */
  readonly appErrors: string[];
  /** How often the child scope's error handler answered. */
  readonly scopedErrors: () => number;
  /** Closes every connection to the server: a request left hanging fails at once instead of holding the client. */
  dropConnections(): void;
  close(): Promise<void>;
}

/** What the app's onRequest hook does to the request's admission, by the x-tamper header. */
const TAMPER: Record<string, (admission: Admission) => Admission | null | undefined> = {
  deleted: () => undefined,
  null: () => null,
  denied: (admission) => ({ ...admission, allowed: false }),
};

/** Stands for a bug that loses the admission between the guard's onRequest hook and the handler. */
function tamper(request: FastifyRequest): void {
  const how = TAMPER[String(request.headers['x-tamper'])];
  if (how === undefined) return;
  const slot = Object.getOwnPropertySymbols(request).find((symbol) => symbol.description === 'lockstep.admission');
  assert.ok(slot !== undefined, 'the guard keeps the admission on the request');
  const record = request as unknown as Record<symbol, unknown>;
  const changed = how(record[slot] as Admission);
  if (changed === undefined) delete record[slot];
  else record[slot] = changed;
}

/** App code that fails on bad input: a SyntaxError, which the guard maps to its 400. */
function failAt(stage: string) {
  return async (request: FastifyRequest) => {
    if (request.headers['x-fail'] === stage) JSON.parse('{');
  };
}

const READ = { config: { lockstep: { action: 'orders:read' } } };
const CREATE = { config: { lockstep: { action: 'orders:create' } } };
const ITEM = {
  body: { type: 'object', additionalProperties: false, required: ['item'], properties: { item: { type: 'string' } } },
};

/**
 * GET /orders/:id answers 200, unless its id is `throws` (a plain Error) or `refuses` (a GuardError);
 * POST /orders and POST /notes (bodyLimit 64) take `{ item }`. Under /scoped, a child scope whose
 * error handler answers 418 in its own words, with hooks that fail before the body is read
 * (`x-fail: preParsing`) or after (`x-fail: preValidation`). The app's onRequest hook takes the
 * admission away as x-tamper says; its onError hook reports errors; its onSend hook marks every
 * answer it sees with x-app.
 */
async function serve(): Promise<Service> {
  const errors: string[] = [];
  const logger: GuardLogger = { info() {}, warn() {}, error: (message) => void errors.push(message) };
  const guard = await guardFor(w, { logger });
  const app = Fastify({ https: guard.tlsOptions(), logger: false });
  await app.register(lockstep, { guard });
  app.addHook('onRequest', (request, _reply, done) => {
    tamper(request);
    done();
  });
  const appErrors: string[] = [];
  app.addHook('onError', (_request, _reply, error, done) => {
    appErrors.push(error.message);
    done();
  });
  app.addHook('onSend', (_request, reply, payload, done) => {
    void reply.header('x-app', 'yes');
    done(null, payload);
  });
  const calls: HandlerCall[] = [];
  const record = (request: FastifyRequest) => {
    calls.push({ method: request.method, url: request.url, requestId: currentAdmission()?.requestId ?? null });
  };
  const getOrder = async (request: FastifyRequest) => {
    record(request);
    const { id } = request.params as { id: string };
    if (id === 'throws') throw new Error('handler failed');
    if (id === 'refuses') throw new GuardError('LOCKSTEP_ERR_INPUT_INVALID', 'the handler found the order id invalid');
    return { ok: true, id };
  };
  const create = async (request: FastifyRequest) => {
    record(request);
    return { ok: true, body: request.body };
  };
  app.get('/orders/:id', READ, getOrder);
  app.post('/orders', { ...CREATE, schema: ITEM }, create);
  app.post('/notes', { ...CREATE, schema: ITEM, bodyLimit: 64 }, create);
  let scopedErrors = 0;
  await app.register(
    async (child) => {
      child.setErrorHandler((_error, _request, reply) => {
        scopedErrors += 1;
        void reply.code(418).header('x-mine', 'yes').send({ mine: true });
      });
      child.addHook('preParsing', failAt('preParsing'));
      child.addHook('preValidation', failAt('preValidation'));
      child.get('/orders/:id', READ, getOrder);
      child.post('/orders', { ...CREATE, schema: ITEM }, create);
    },
    { prefix: '/scoped' },
  );
  await app.listen({ host: '127.0.0.1', port: 0 });
  const { port } = app.server.address() as AddressInfo;
  return {
    url: `https://127.0.0.1:${port}`,
    port,
    guard,
    calls,
    orders: new Map(),
    errors,
    appErrors,
    scopedErrors: () => scopedErrors,
    dropConnections: () => app.server.closeAllConnections(),
    async close() {
      await app.close();
      await guard.close();
    },
  };
}

function statusAndCode(answer: Answer) {
  return [answer.status, answer.headers['lockstep-error']];
}

/** What `expectRefused` watches when the handler does run (that is the point): nothing else may. */
function handlerRuns(): Observed {
  return { calls: [], orders: new Map() };
}

/** The body of a refusal with `code`: its length is the content-length of the same refusal to HEAD. */
function refusalBody(code: string, requestId: string): string {
  return JSON.stringify({ error: code, requestId });
}

describe('Fastify adapter: the guard failing before a decision', () => {
  let service: Service;
  let admit: Guard['pipeline']['admit'];
  before(async () => {
    service = await serve();
    admit = service.guard.pipeline.admit;
  });
  afterEach(() => {
    service.guard.pipeline.admit = admit;
  });
  after(() => service.close());

  // /orders/%zz is a URL the router cannot take (a bad escape): it is decided by frameworkErrors.
  const paths = { 'in onRequest': '/orders/7', 'for a URL the router cannot take': '/orders/%zz' };
  for (const [how, fail] of Object.entries(ADMIT_FAILURES)) {
    for (const [where, path] of Object.entries(paths)) {
      it(`admit ${how} ${where}: answered 500 LOCKSTEP_ERR_INTERNAL, audited once, logged, no handler runs`, async () => {
        // Only a request with x-break-guard finds the guard failing; the rest go through the real pipeline.
        breakAdmit(service.guard, admit, fail, (request) => request.headers['x-break-guard'] !== undefined);
        const client = w.client(w.svids.gateway);
        try {
          const token = await w.customerToken();
          const get = (to: string, headers: Record<string, string> = {}) =>
            within(client.request(`${service.url}${to}`, { headers: { 'txn-token': token, ...headers } }), `GET ${to}`);
          const errorsBefore = service.errors.length;
          const broken = () => get(path, { 'x-break-guard': 'yes' });
          const { event } = await expectRefused(service, decisions, broken, 500, 'LOCKSTEP_ERR_INTERNAL');
          assert.deepEqual(
            decisions.outcomesOf(event.requestId),
            [['deny', 'LOCKSTEP_ERR_INTERNAL']],
            'one event: no admission',
          );
          assert.deepEqual(service.errors.slice(errorsBefore), ['guard failed before a decision; request refused']);
          const next = await get('/orders/2');
          assert.equal(next.status, 200, `the next request is decided as usual: ${next.text}`);
        } finally {
          service.dropConnections();
          await client.close();
        }
      });
    }
  }
});

describe('Fastify adapter: a request that lost its admission before the handler', () => {
  let service: Service;
  before(async () => {
    service = await serve();
  });
  after(() => service.close());

  // The handler never runs without an allowed admission. The input check (preHandler) refuses a body
  // in the guard's words; without any admission, that is the guard failing: 500.
  const cases = [
    { tamper: 'deleted', input: [500, 'LOCKSTEP_ERR_INTERNAL'] },
    { tamper: 'null', input: [500, 'LOCKSTEP_ERR_INTERNAL'] },
    { tamper: 'denied', input: [400, 'LOCKSTEP_ERR_INPUT_INVALID'] },
  ] as const;
  for (const {
    tamper: how,
    input: [status, code],
  } of cases) {
    it(
      `admission ${how}: the handler does not run (500 LOCKSTEP_ERR_INTERNAL); a bad body is refused ${status} ` + code,
      async () => {
        const client = w.client(w.svids.gateway);
        try {
          const headers = { 'txn-token': await w.customerToken(), 'x-tamper': how, 'content-type': 'application/json' };
          const get = () => within(client.request(`${service.url}/orders/7`, { headers }), 'GET /orders/7');
          const post = () =>
            within(
              client.request(`${service.url}/orders`, { method: 'POST', headers, body: '{"item":7}' }),
              'POST /orders',
            );
          await expectRefused(service, decisions, get, 500, 'LOCKSTEP_ERR_INTERNAL');
          await expectRefused(service, decisions, post, status, code);
        } finally {
          service.dropConnections();
          await client.close();
        }
      },
    );
  }
});

describe('Fastify adapter: handlers that throw', () => {
  let service: Service;
  before(async () => {
    service = await serve();
  });
  after(() => service.close());

  it(
    "a plain Error is the app's to answer: its onError hook sees it, Fastify answers 500, only the admission " +
      'is audited, and the server keeps serving',
    async () => {
      const client = w.client(w.svids.gateway);
      const appErrorsBefore = service.appErrors.length;
      try {
        const headers = { 'txn-token': await w.customerToken() };
        const get = (path: string) => within(client.request(`${service.url}${path}`, { headers }), `GET ${path}`);
        const failed = await get('/orders/throws');
        assert.equal(failed.status, 500, failed.text);
        assert.deepEqual(failed.json(), { statusCode: 500, error: 'Internal Server Error', message: 'handler failed' });
        assert.deepEqual([failed.headers['lockstep-error'], failed.headers['x-app']], [undefined, 'yes'], "the app's");
        assert.deepEqual(
          decisions.outcomesOf(service.calls.at(-1)?.requestId ?? ''),
          [['allow', 'LOCKSTEP_ALLOW']],
          'no refusal',
        );
        assert.deepEqual(
          service.appErrors.slice(appErrorsBefore),
          ['handler failed'],
          "the app's onError hook ran too",
        );
        const next = await get('/orders/7');
        assert.deepEqual([next.status, next.json()], [200, { ok: true, id: '7' }], next.text);
      } finally {
        service.dropConnections();
        await client.close();
      }
    },
  );

  for (const path of ['/orders/refuses', '/scoped/orders/refuses']) {
    const scoped = path.startsWith('/scoped');
    const where = scoped ? 'in a child scope with its own error handler' : "with Fastify's error handler";
    it(
      `a GuardError ${where} is answered in the guard's words, untouched by the app's onSend hook, and audited as ` +
        'a second event',
      async () => {
        const client = w.client(w.svids.gateway);
        const scopedBefore = service.scopedErrors();
        try {
          const headers = { 'txn-token': await w.customerToken() };
          const get = () => within(client.request(`${service.url}${path}`, { headers }), `GET ${path}`);
          const { answer } = await expectRefused(handlerRuns(), decisions, get, 400, 'LOCKSTEP_ERR_INPUT_INVALID');
          const theApps = [answer.headers['x-app'], answer.headers['x-mine']];
          assert.deepEqual(theApps, [undefined, undefined], "none of the app's headers");
          const requestId = String(answer.headers[REQUEST_ID_HEADER]);
          assert.equal(service.calls.at(-1)?.requestId, requestId, 'refused under the admission the handler ran under');
          assert.deepEqual(decisions.outcomesOf(requestId), [
            ['allow', 'LOCKSTEP_ALLOW'],
            ['deny', 'LOCKSTEP_ERR_INPUT_INVALID'],
          ]);
          assert.equal(service.scopedErrors() - scopedBefore, scoped ? 1 : 0, "the child's error handler ran");
        } finally {
          service.dropConnections();
          await client.close();
        }
      },
    );
  }
});

describe("Fastify adapter: the app's own root error handler", () => {
  it(
    'can be set after the plugin, even with allowErrorHandlerOverride: false; a GuardError is still answered in ' +
      "the guard's words",
    async () => {
      const guard = await guardFor(w);
      // Fastify v6 makes this the default: a second error handler in one scope is refused at start-up.
      const app = Fastify({ https: guard.tlsOptions(), logger: false, allowErrorHandlerOverride: false });
      await app.register(lockstep, { guard });
      const answered: string[] = [];
      app.setErrorHandler((error: Error, _request, reply) => {
        answered.push(error.message);
        void reply.code(503).send({ mine: error.message });
      });
      app.get('/orders/:id', READ, async (request) => {
        if ((request.params as { id: string }).id === 'refuses') {
          throw new GuardError('LOCKSTEP_ERR_INPUT_INVALID', 'no such order');
        }
        throw new Error('handler failed');
      });
      await app.listen({ host: '127.0.0.1', port: 0 });
      const url = `https://127.0.0.1:${(app.server.address() as AddressInfo).port}`;
      const client = w.client(w.svids.gateway);
      try {
        const headers = { 'txn-token': await w.customerToken() };
        const get = (path: string) => within(client.request(`${url}${path}`, { headers }), `GET ${path}`);
        const mine = await get('/orders/throws');
        assert.deepEqual(
          [mine.status, mine.json()],
          [503, { mine: 'handler failed' }],
          'the app answers its own errors',
        );
        await expectRefused(handlerRuns(), decisions, () => get('/orders/refuses'), 400, 'LOCKSTEP_ERR_INPUT_INVALID');
        const guardError = 'LOCKSTEP_ERR_INPUT_INVALID: no such order';
        assert.deepEqual(answered, ['handler failed', guardError], 'its answer to the GuardError was replaced');
      } finally {
        app.server.closeAllConnections();
        await client.close();
        await app.close();
        await guard.close();
      }
    },
  );
});

describe("Fastify adapter: a refusal answered through a child scope's error handler, on a keep-alive connection", () => {
  let service: Service;
  before(async () => {
    service = await serve();
  });
  after(() => service.close());

  /** `x-fail: preValidation` on `path`, with what else `options` says: refused through the child's error handler. */
  const failing = async (method: string, path: string, options: { headers?: string[]; body?: string } = {}) => {
    const headers = ['x-fail: preValidation', ...(options.headers ?? [])];
    return rawRequest(method, path, { ...options, token: await w.customerToken(), headers });
  };

  /** Sends `first`, to be refused 400 through the child's error handler, then a good GET on the same connection. */
  async function refusedThenReused(first: string): Promise<void> {
    const connection = await connect(w, service.port);
    const scopedBefore = service.scopedErrors();
    try {
      connection.send(first);
      const refused = await connection.answer();
      assert.deepEqual(statusAndCode(refused), [400, 'LOCKSTEP_ERR_INPUT_INVALID'], refused.text);
      assert.equal(service.scopedErrors() - scopedBefore, 1, 'answered through the error handler');
      assert.equal(refused.headers.connection, 'keep-alive');
      connection.send(rawRequest('GET', '/orders/5', { token: await w.customerToken() }));
      const next = await connection.answer();
      assert.deepEqual([next.status, JSON.parse(next.text)], [200, { ok: true, id: '5' }], next.text);
    } finally {
      connection.destroy();
    }
  }

  it('a request without a body leaves the connection open: the next request on it is answered', async () => {
    await refusedThenReused(await failing('GET', '/scoped/orders/4'));
  });

  it('a request whose body was read in full leaves the connection open', async () => {
    const body = '{"item":"tea"}';
    const headers = ['content-type: application/json', `content-length: ${body.length}`];
    await refusedThenReused(await failing('POST', '/scoped/orders', { headers, body }));
  });

  it('a request whose body was not read is answered with connection: close, and the connection closes', async () => {
    const connection = await connect(w, service.port);
    try {
      // 100 bytes announced, 8 sent: the rest would be read as the next request if the connection stayed open.
      const headers = ['x-fail: preParsing', 'content-type: application/json', 'content-length: 100'];
      const token = await w.customerToken();
      connection.send(rawRequest('POST', '/scoped/orders', { token, headers, body: '{"item":' }));
      const refused = await connection.answer();
      assert.deepEqual(statusAndCode(refused), [400, 'LOCKSTEP_ERR_INPUT_INVALID'], refused.text);
      assert.equal(refused.headers.connection, 'close');
      await connection.closed();
    } finally {
      connection.destroy();
    }
  });

  it("a HEAD has no body and the content-length of the GET refusal (Fastify's HEAD route would set 0)", async () => {
    const connection = await connect(w, service.port);
    try {
      connection.send(await failing('HEAD', '/scoped/orders/4'));
      const refused = await connection.answer({ head: true });
      const code = 'LOCKSTEP_ERR_INPUT_INVALID';
      const answer = [...statusAndCode(refused), refused.text, refused.headers['x-app']];
      assert.deepEqual(answer, [400, code, '', undefined]);
      const requestId = String(refused.headers[REQUEST_ID_HEADER]);
      assert.equal(refused.headers['content-length'], String(refusalBody(code, requestId).length));
      connection.send(rawRequest('GET', '/orders/5', { token: await w.customerToken() }));
      assert.equal((await connection.answer()).status, 200, 'nothing of a body was left on the connection');
    } finally {
      connection.destroy();
    }
  });
});

describe("Fastify adapter: a route's own bodyLimit, below the guard's", () => {
  let service: Service;
  before(async () => {
    service = await serve();
  });
  after(() => service.close());

  const post = async (length: number) =>
    rawRequest('POST', '/notes', {
      token: await w.customerToken(),
      headers: ['content-type: application/json', `content-length: ${length}`, 'expect: 100-continue'],
    });

  it('a declared length over it is refused 413 before 100 Continue and before any of the body is read', async () => {
    const connection = await connect(w, service.port);
    const callsBefore = service.calls.length;
    try {
      // Over the route's 64 bytes, far under the guard's 1 MiB; the body is never sent.
      connection.send(await post(100));
      const refused = await connection.answer();
      assert.deepEqual(statusAndCode(refused), [413, 'LOCKSTEP_ERR_BODY_TOO_LARGE'], refused.text);
      assert.equal(refused.headers.connection, 'close');
      await connection.closed();
      assert.equal(service.calls.length, callsBefore, 'no handler ran');
    } finally {
      connection.destroy();
    }
  });

  it('a declared length within it gets 100 Continue, and the body is taken', async () => {
    const connection = await connect(w, service.port);
    try {
      const body = '{"item":"tea"}';
      connection.send(await post(body.length));
      assert.equal((await connection.answer()).status, 100);
      connection.send(body);
      const created = await connection.answer();
      assert.deepEqual([created.status, JSON.parse(created.text)], [200, { ok: true, body: { item: 'tea' } }]);
    } finally {
      connection.destroy();
    }
  });
});
