import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import Fastify from 'fastify';
import { fastifyOptionsSymbol, fastifyRouteContext } from './fastify.ts';

describe('Fastify route context', () => {
  it("reads the matched route's config without the routeOptions getter on the installed Fastify", async () => {
    // If a Fastify upgrade renames its internal symbol the adapter still works (public getter), but
    // this test says the fast path is gone.
    assert.equal(typeof fastifyRouteContext, 'symbol');
    const app = Fastify();
    const seen: unknown[] = [];
    app.addHook('onRequest', (request, _reply, done) => {
      const context = (request as unknown as Record<symbol, { config: unknown }>)[fastifyRouteContext as symbol] as {
        config: unknown;
      };
      seen.push(context.config === request.routeOptions.config, (context.config as { marker?: string }).marker);
      done();
    });
    app.get('/x', { config: { marker: 'here' } }, async () => ({ ok: true }));
    const response = await app.inject({ method: 'GET', url: '/x' });
    assert.equal(response.statusCode, 200);
    assert.deepEqual(seen, [true, 'here']);
    await app.close();
  });

  it('reaches the options Fastify reads frameworkErrors from, so that the guard can take bad URLs over', async () => {
    // If a Fastify upgrade moves its options, the plugin logs an error at start-up; this test says why.
    assert.equal(typeof fastifyOptionsSymbol, 'symbol');
    const app = Fastify();
    const seen: string[] = [];
    const options = (app as unknown as Record<symbol, { frameworkErrors?: unknown }>)[fastifyOptionsSymbol as symbol];
    assert.ok(options !== undefined && typeof options === 'object');
    type Reply = { raw: { writeHead(status: number): { end(): void } } };
    options.frameworkErrors = (error: { code: string }, _request: unknown, reply: Reply) => {
      seen.push(error.code);
      reply.raw.writeHead(299).end();
    };
    app.get('/x/:id', async () => ({ ok: true }));
    const response = await app.inject({ method: 'GET', url: '/x/%zz' });
    assert.equal(response.statusCode, 299);
    assert.deepEqual(seen, ['FST_ERR_BAD_URL']);
    await app.close();
  });
});
