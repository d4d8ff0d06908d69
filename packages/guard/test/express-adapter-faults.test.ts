/**
 * The Express adapter when the guard itself fails before a decision, over real mTLS: the request is
 * answered 500 and audited, no handler runs (nor the app's error handler), and the next request is
 * decided as usual. Written for what the mutation run on the adapters found untested
 * (docs/mutation.md). As in http-adapter-faults.test.ts, the failure is injected by replacing
 * `guard.pipeline.admit` for one request: nothing from outside the process can make the guard throw.
 */
import assert from 'node:assert/strict';
import type { Server } from 'node:https';
import type { AddressInfo } from 'node:net';
import { after, afterEach, before, describe, it } from 'node:test';
import express, { type NextFunction, type Request, type Response } from 'express';
import { currentAdmission, type Guard } from '../src/index.ts';
import { lockstepExpress } from '../src/adapters/express.ts';
import {
  ADMIT_FAILURES,
  breakAdmit,
  expectRefused,
  guardFor,
  recordDecisions,
  within,
  world,
  type DecisionRecorder,
  type HandlerCall,
  type World,
} from './fixture.ts';

let w: World;
let decisions: DecisionRecorder;
before(async () => {
  w = await world();
  decisions = recordDecisions();
});
after(() => decisions.stop());

describe('Express adapter: the guard failing before a decision', () => {
  let guard: Guard;
  let server: Server;
  let url: string;
  let admit: Guard['pipeline']['admit'];
  /** Every handler call, the app's error handler included: a refused request must add none. */
  const service = { calls: [] as HandlerCall[], orders: new Map<string, unknown>() };
  const note = (request: Request) => {
    service.calls.push({ method: request.method, url: request.url, requestId: currentAdmission()?.requestId ?? null });
  };

  before(async () => {
    guard = await guardFor(w);
    admit = guard.pipeline.admit;
    const app = express();
    app.use(lockstepExpress(guard, { 'GET /orders/:id': { action: 'orders:read' } }));
    app.get('/orders/:id', (request, response) => {
      note(request);
      response.json({ id: request.params.id });
    });
    app.use((_error: unknown, request: Request, response: Response, _next: NextFunction) => {
      note(request);
      response.status(500).send('<!DOCTYPE html><title>Error</title>');
    });
    server = guard.createServer(app);
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    url = `https://127.0.0.1:${(server.address() as AddressInfo).port}`;
  });
  afterEach(() => {
    guard.pipeline.admit = admit;
  });
  after(async () => {
    server.closeAllConnections();
    await new Promise<void>((resolve) => server.close(() => resolve()));
    await guard.close();
  });

  for (const [how, fail] of Object.entries(ADMIT_FAILURES)) {
    it(`admit ${how}: answered 500 LOCKSTEP_ERR_INTERNAL, audited once as a refusal, no handler runs`, async () => {
      // Only the request for order "broken" finds the guard failing; the rest go through the real pipeline.
      breakAdmit(guard, admit, fail, (_request, _route, params) => params?.id === 'broken');
      const client = w.client(w.svids.gateway);
      try {
        const headers = { 'txn-token': await w.customerToken() };
        const get = (path: string) => within(client.request(`${url}${path}`, { headers }), `GET ${path}`);
        const broken = () => get('/orders/broken');
        const { event } = await expectRefused(service, decisions, broken, 500, 'LOCKSTEP_ERR_INTERNAL');
        assert.deepEqual(
          decisions.outcomesOf(event.requestId).map(([, reason]) => reason),
          ['LOCKSTEP_ERR_INTERNAL'],
          'one event: there was no admission',
        );
        // The next request is decided as usual.
        const next = await get('/orders/2');
        assert.deepEqual([next.status, next.json()], [200, { id: '2' }], next.text);
      } finally {
        server.closeAllConnections();
        await client.close();
      }
    });
  }
});
