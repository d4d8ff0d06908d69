import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import Fastify from 'fastify';
import { fastifyRouteContext } from './fastify.ts';

describe('Fastify route context', () => {
  it("reads the matched route's config without the routeOptions getter on the installed Fastify", async () => {
    // If a Fastify upgrade renames its internal symbol the adapter still works (public getter), but
    // this test says the fast path is gone.
    assert.equal(typeof fastifyRouteContext, 'symbol');
    const app = Fastify();
    const seen: unknown[] = [];
    app.addHook('onRequest', (request, _reply, done) => {
      const context = (request as unknown as Record<symbol, { config: unknown }>)[fastifyRouteContext as symbol] as { config: unknown };
      seen.push(context.config === request.routeOptions.config, (context.config as { marker?: string }).marker);
      done();
    });
    app.get('/x', { config: { marker: 'here' } }, async () => ({ ok: true }));
    const response = await app.inject({ method: 'GET', url: '/x' });
    assert.equal(response.statusCode, 200);
    assert.deepEqual(seen, [true, 'here']);
    await app.close();
  });
});
