/**
 * The node:http adapter when something fails, over real mTLS: a handler that throws or rejects
 * (before it answered, after it set headers, after it sent them), the guard itself failing before a
 * decision, exact routing (no trailing-slash or case folding), and whether the connection survives
 * a refusal. Written for what the mutation run on the adapters found untested (docs/mutation.md).
 * The guard's own failure is injected by replacing `guard.pipeline.admit` for one request, as
 * src/pipeline.test.ts does for a step: nothing from outside the process can make the guard throw.
 * Every wait is bounded, so a request the adapter leaves unanswered fails the test instead of hanging it.
 */
import assert from 'node:assert/strict';
import type { Server } from 'node:https';
import type { AddressInfo } from 'node:net';
import { after, afterEach, before, describe, it } from 'node:test';
import { z } from 'zod';
import type { Guard } from '../src/index.ts';
import { lockstepHttp } from '../src/adapters/node-http.ts';
import type { RouteTable } from '../src/route-table.ts';
import {
  ADMIT_FAILURES,
  breakAdmit,
  expectRefused,
  guardFor,
  parseRawAnswer,
  recordDecisions,
  within,
  world,
  type DecisionRecorder,
  type HandlerCall,
  type World,
} from './fixture.ts';
import { connect, rawRequest } from './raw-connection.ts';

const TABLE: RouteTable = {
  'GET /orders/:id': { action: 'orders:read' },
  'POST /orders': { action: 'orders:create', body: z.object({ item: z.string() }).strict() },
};

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
  /** Closes every connection to the server: a request left hanging fails at once instead of holding the client. */
  dropConnections(): void;
  close(): Promise<void>;
}

/**
 * TABLE behind the node:http adapter. GET /orders/:id fails the way its id says (`throws`, `rejects`,
 * `leaks` and `leaks-async` set x-leak first, `partial` writes a 200 and part of a body first,
 * `partial-sent` rejects once those went out); any other id, and POST /orders, is answered 200.
 */
async function serve(): Promise<Service> {
  const guard = await guardFor(w);
  const calls: HandlerCall[] = [];
  // Not an async function: `throws`, `leaks` and `partial` throw from the handler call itself.
  const server: Server = guard.createServer(
    lockstepHttp(guard, TABLE, (request, response, { params, admission }) => {
      calls.push({ method: request.method ?? '', url: request.url ?? '', requestId: admission.requestId });
      const id = params.id ?? '';
      if (id === 'throws') throw new Error('handler failed');
      if (id === 'leaks') {
        response.setHeader('x-leak', '1');
        throw new Error('handler failed after setting a header');
      }
      if (id === 'partial') {
        response.writeHead(200, { 'content-type': 'text/plain' });
        response.write('partial');
        throw new Error('handler failed half way through its answer');
      }
      return (async () => {
        await Promise.resolve();
        if (id === 'rejects') throw new Error('handler rejected');
        if (id === 'leaks-async') {
          response.setHeader('x-leak', '1');
          throw new Error('handler rejected after setting a header');
        }
        if (id === 'partial-sent') {
          response.writeHead(200, { 'content-type': 'text/plain' });
          response.write('partial');
          await new Promise((resolve) => setImmediate(resolve)); // the head and the first chunk go out
          throw new Error('handler rejected half way through its answer');
        }
        const body = JSON.stringify({ ok: true, id: params.id ?? null });
        response.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) });
        response.end(body);
      })();
    }),
  );
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return {
    url: `https://127.0.0.1:${port}`,
    port,
    guard,
    calls,
    orders: new Map(),
    dropConnections: () => server.closeAllConnections(),
    async close() {
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
      await guard.close();
    },
  };
}

describe('node:http adapter: a handler that fails', () => {
  let service: Service;
  before(async () => {
    service = await serve();
  });
  after(() => service.close());

  for (const [id, how] of [
    ['throws', 'throws synchronously'],
    ['rejects', 'returns a promise that rejects'],
  ] as const) {
    it(`a handler that ${how} is answered 500 LOCKSTEP_ERR_INTERNAL, audited as a second event, and the server keeps serving`, async () => {
      const client = w.client(w.svids.gateway);
      try {
        const token = await w.customerToken();
        const get = (path: string) =>
          within(client.request(`${service.url}${path}`, { headers: { 'txn-token': token } }), `GET ${path}`);
        // The handler does run (that is the point): the empty record stands for "nothing else ran".
        const { event } = await expectRefused(
          { calls: [], orders: new Map() },
          decisions,
          () => get(`/orders/${id}`),
          500,
          'LOCKSTEP_ERR_INTERNAL',
        );
        assert.equal(
          service.calls.at(-1)?.requestId,
          event.requestId,
          'the refusal is that of the admission the handler ran under',
        );
        assert.deepEqual(decisions.outcomesOf(event.requestId), [
          ['allow', 'LOCKSTEP_ALLOW'],
          ['deny', 'LOCKSTEP_ERR_INTERNAL'],
        ]);
        const next = await get('/orders/7');
        assert.deepEqual([next.status, next.json()], [200, { ok: true, id: '7' }], next.text);
      } finally {
        service.dropConnections();
        await client.close();
      }
    });
  }

  for (const id of ['leaks', 'leaks-async']) {
    it(`the refusal carries none of the headers a failing handler had set (${id === 'leaks' ? 'it threw' : 'it rejected'})`, async () => {
      const client = w.client(w.svids.gateway);
      try {
        const headers = { 'txn-token': await w.customerToken() };
        const get = () => within(client.request(`${service.url}/orders/${id}`, { headers }), `GET /orders/${id}`);
        const { answer } = await expectRefused(
          { calls: [], orders: new Map() },
          decisions,
          get,
          500,
          'LOCKSTEP_ERR_INTERNAL',
        );
        assert.equal(answer.headers['x-leak'], undefined, "x-leak was the handler's, not the refusal's");
      } finally {
        service.dropConnections();
        await client.close();
      }
    });
  }

  /** The connection is closed by the server; what came before is not a whole answer and no refusal. */
  async function cutShort(id: string): Promise<{ raw: string; requestId: string }> {
    const connection = await connect(w, service.port);
    try {
      connection.send(rawRequest('GET', `/orders/${id}`, { token: await w.customerToken() }));
      const raw = await connection.closed();
      assert.doesNotMatch(raw, /lockstep-error|LOCKSTEP_ERR/, 'no refusal written into a started answer');
      assert.doesNotMatch(raw, /\r\n0\r\n\r\n$/, 'no last chunk: the client cannot take it for a whole answer');
      const requestId = service.calls.at(-1)?.requestId ?? '';
      assert.deepEqual(
        decisions.outcomesOf(requestId),
        [
          ['allow', 'LOCKSTEP_ALLOW'],
          ['deny', 'LOCKSTEP_ERR_INTERNAL'],
        ],
        'the refusal is audited',
      );
      return { raw, requestId };
    } finally {
      connection.destroy();
    }
  }

  it('a handler that throws right after writing its head and part of a body has the connection closed, no whole answer, the refusal audited', async () => {
    // Node had not flushed the corked writes yet: the client gets at most the start of the 200.
    const { raw } = await cutShort('partial');
    if (raw !== '') assert.match(raw, /^HTTP\/1\.1 200 /);
  });

  it('a handler that rejects after its head and part of a body went out has the connection cut: the client sees the body cut short', async () => {
    const { raw } = await cutShort('partial-sent');
    const answer = parseRawAnswer(raw);
    assert.equal(answer.status, 200, "the handler's status line had gone out");
    assert.equal(answer.headers['transfer-encoding'], 'chunked');
    assert.match(answer.text, /partial/);
  });
});

describe('node:http adapter: the guard failing before a decision', () => {
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

  for (const [how, fail] of Object.entries(ADMIT_FAILURES)) {
    it(`admit ${how}: answered 500 LOCKSTEP_ERR_INTERNAL, audited once as a refusal, no handler runs`, async () => {
      // Only the request for order "broken" finds the guard failing; the rest go through the real pipeline.
      breakAdmit(service.guard, admit, fail, (_request, _route, params) => params?.id === 'broken');
      const client = w.client(w.svids.gateway);
      try {
        const headers = { 'txn-token': await w.customerToken() };
        const get = (path: string) => within(client.request(`${service.url}${path}`, { headers }), `GET ${path}`);
        const { event } = await expectRefused(
          service,
          decisions,
          () => get('/orders/broken'),
          500,
          'LOCKSTEP_ERR_INTERNAL',
        );
        assert.deepEqual(
          decisions.outcomesOf(event.requestId),
          [['deny', 'LOCKSTEP_ERR_INTERNAL']],
          'one event: there was no admission',
        );
        const next = await get('/orders/2');
        assert.equal(next.status, 200, `the next request is decided as usual: ${next.text}`);
      } finally {
        service.dropConnections();
        await client.close();
      }
    });
  }
});

describe('node:http adapter: routing is exact', () => {
  let service: Service;
  before(async () => {
    service = await serve();
  });
  after(() => service.close());

  it('with GET /orders/:id declared, /orders/1/ (trailing slash) and /ORDERS/1 (other case) are unknown routes', async () => {
    const client = w.client(w.svids.gateway);
    try {
      const headers = { 'txn-token': await w.customerToken() };
      const get = (path: string) => within(client.request(`${service.url}${path}`, { headers }), `GET ${path}`);
      assert.equal((await get('/orders/1')).status, 200, 'the declared route itself');
      for (const path of ['/orders/1/', '/ORDERS/1', '/Orders/1']) {
        await expectRefused(service, decisions, () => get(path), 404, 'LOCKSTEP_ERR_ROUTE_UNKNOWN');
      }
    } finally {
      service.dropConnections();
      await client.close();
    }
  });
});

describe('node:http adapter: the connection after a refusal', () => {
  let service: Service;
  before(async () => {
    service = await serve();
  });
  after(() => service.close());

  /** Sends `first`, to be refused with `status` and `code`, and a good GET after it on the same connection. */
  async function refusedThenReused(
    first: string,
    status = 401,
    code = 'LOCKSTEP_ERR_TXN_TOKEN_MISSING',
  ): Promise<void> {
    const connection = await connect(w, service.port);
    try {
      connection.send(first);
      const refused = await connection.answer();
      assert.deepEqual([refused.status, refused.headers['lockstep-error']], [status, code], refused.text);
      assert.notEqual(refused.headers.connection, 'close');
      connection.send(rawRequest('GET', '/orders/5', { token: await w.customerToken() }));
      const next = await connection.answer();
      assert.deepEqual([next.status, JSON.parse(next.text)], [200, { ok: true, id: '5' }], next.text);
    } finally {
      connection.destroy();
    }
  }

  it('a refused request without a body leaves the connection open: the next request on it is answered', async () => {
    const callsBefore = service.calls.length;
    await refusedThenReused(rawRequest('GET', '/orders/4'));
    assert.deepEqual(
      service.calls.slice(callsBefore).map((call) => call.url),
      ['/orders/5'],
      'only the second request ran',
    );
  });

  it('a request refused for its body, which the guard read in full, leaves the connection open', async () => {
    const body = '{"item":7}';
    const headers = ['content-type: application/json', `content-length: ${body.length}`];
    const callsBefore = service.calls.length;
    const post = rawRequest('POST', '/orders', { token: await w.customerToken(), headers, body });
    await refusedThenReused(post, 400, 'LOCKSTEP_ERR_INPUT_INVALID');
    assert.deepEqual(
      service.calls.slice(callsBefore).map((call) => call.url),
      ['/orders/5'],
      'only the second request ran',
    );
  });

  it('a refused request whose body was not read is answered with connection: close, and the connection closes', async () => {
    const connection = await connect(w, service.port);
    const callsBefore = service.calls.length;
    try {
      // 100 bytes announced, 8 sent: the rest would be read as the next request if the connection stayed open.
      const headers = ['content-type: application/json', 'content-length: 100'];
      connection.send(rawRequest('POST', '/orders', { headers, body: '{"item":' }));
      const refused = await connection.answer();
      assert.deepEqual(
        [refused.status, refused.headers['lockstep-error']],
        [401, 'LOCKSTEP_ERR_TXN_TOKEN_MISSING'],
        refused.text,
      );
      assert.equal(refused.headers.connection, 'close');
      const requestId = String(refused.headers['lockstep-request-id']);
      assert.deepEqual(decisions.outcomesOf(requestId), [['deny', 'LOCKSTEP_ERR_TXN_TOKEN_MISSING']]);
      await connection.closed();
      assert.equal(service.calls.length, callsBefore, 'no handler ran');
    } finally {
      connection.destroy();
    }
  });
});
