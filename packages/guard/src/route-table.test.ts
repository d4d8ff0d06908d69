import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { z } from 'zod';
import { assertConfigError } from '../test/assert-config-error.ts';
import { parseRouteTable, routeMatcher, type RouteTable } from './route-table.ts';

describe('parseRouteTable', () => {
  it('reads method, template, default or explicit action, flags and body schema', () => {
    const OrderSchema = z.object({ item: z.string() });
    const routes = parseRouteTable(
      {
        'GET /orders/:id': {},
        'POST /orders': { action: 'orders:create', body: OrderSchema },
        'GET /health': { public: true },
        'DELETE /orders/:id': { dryRun: true },
      },
      'lockstepHttp',
    );
    assert.deepEqual(
      routes.map((route) => route.security),
      [
        {
          method: 'GET',
          template: '/orders/:id',
          action: 'GET /orders/:id',
          public: false,
          dryRun: false,
          owner: null,
          validatesBody: false,
        },
        {
          method: 'POST',
          template: '/orders',
          action: 'orders:create',
          public: false,
          dryRun: false,
          owner: null,
          validatesBody: true,
        },
        {
          method: 'GET',
          template: '/health',
          action: 'GET /health',
          public: true,
          dryRun: false,
          owner: null,
          validatesBody: false,
        },
        {
          method: 'DELETE',
          template: '/orders/:id',
          action: 'DELETE /orders/:id',
          public: false,
          dryRun: true,
          owner: null,
          validatesBody: false,
        },
      ],
    );
    assert.equal(routes[1]?.body, OrderSchema);
    assert.equal(routes[0]?.body, undefined);
  });

  it('accepts every supported method and the root path', () => {
    const table: RouteTable = {};
    for (const method of ['GET', 'HEAD', 'POST', 'PUT', 'PATCH', 'DELETE', 'OPTIONS']) table[`${method} /`] = {};
    assert.deepEqual(
      parseRouteTable(table, 'x').map((route) => route.security.method),
      ['GET', 'HEAD', 'POST', 'PUT', 'PATCH', 'DELETE', 'OPTIONS'],
    );
  });

  it('refuses route keys that are not "<METHOD> /path" and shows one that is', () => {
    for (const key of [
      'get /x',
      'GET x',
      'GET  /x',
      'GET /x y',
      '/x',
      'GET',
      'TRACE /x',
      'CONNECT /x',
      ' GET /x',
      'GET\t/x',
    ]) {
      assertConfigError(
        () => parseRouteTable({ [key]: {} }, 'lockstepExpress'),
        `lockstepExpress: route key ${JSON.stringify(key)} must be "<METHOD> /path"`,
        'e.g. "GET /orders/:id"',
      );
    }
  });

  it('refuses a table that is not an object, showing an example', () => {
    assertConfigError(
      () => parseRouteTable(null as unknown as RouteTable, 'lockstepHttp'),
      'lockstepHttp: routes must be an object like',
      "'GET /health': { public: true }",
    );
  });

  it('refuses a body that is not a schema', () => {
    assertConfigError(
      () => parseRouteTable({ 'POST /orders': { body: { type: 'object' } as never } }, 'lockstepHttp'),
      'lockstepHttp: POST /orders: body must be a zod schema',
    );
  });

  it('refuses unknown options and non-boolean flags, naming the route', () => {
    assertConfigError(
      () => parseRouteTable({ 'GET /x': { pubic: true } as never }, 'lockstepHttp'),
      'lockstepHttp: GET /x: unknown lockstep route option "pubic"',
    );
    assertConfigError(
      () => parseRouteTable({ 'GET /health': { public: 'yes' } as never }, 'lockstepHttp'),
      'lockstepHttp: GET /health: public must be true or false',
    );
    assertConfigError(
      () => parseRouteTable({ 'GET /x': { dryRun: 'false' } as never }, 'lockstepHttp'),
      'dryRun must be true or false',
    );
  });

  it('refuses a route config that is not an object instead of enforcing defaults silently', () => {
    assertConfigError(
      () => parseRouteTable({ 'GET /health': true as never }, 'lockstepHttp'),
      'GET /health',
      'must be an object',
    );
    assertConfigError(
      () => parseRouteTable({ 'GET /x': null as never }, 'lockstepHttp'),
      'GET /x',
      'must be an object',
    );
    assertConfigError(
      () => parseRouteTable({ 'GET /orders': 'orders:read' as never }, 'lockstepHttp'),
      'GET /orders',
      'must be an object',
    );
  });

  it('refuses coerceBody, which is for Fastify routes: with zod the schema coerces', () => {
    const table = { 'POST /orders': { body: z.object({ n: z.number() }), coerceBody: true } };
    assertConfigError(() => parseRouteTable(table, 'lockstepHttp'), 'coerceBody is for Fastify routes');
  });
});

describe('routeMatcher: find, and ambiguity for a guard in front of another server', () => {
  const ambiguityOf = (table: RouteTable) => {
    const matcher = routeMatcher(parseRouteTable(table, 'test'));
    return (method: string, target: string, headers: Record<string, string> = {}) =>
      matcher.ambiguity(method, target, headers);
  };

  const table: RouteTable = {
    'GET /:page': { public: true },
    'GET /admin/users': { action: 'admin:read' },
    'GET /orders/:id': { action: 'orders:read' },
  };

  it('matches case-sensitively, a HEAD as its GET route, and keeps the letter case of params', () => {
    const matcher = routeMatcher(parseRouteTable(table, 'test'));
    assert.equal(matcher.find('GET', '/orders/AbC')?.params.id, 'AbC');
    assert.equal(matcher.find('HEAD', '/admin/users')?.route.security.action, 'admin:read');
    assert.equal(matcher.find('GET', '/Admin/users'), null);
    assert.equal(matcher.find('GET', '/%zz'), null, 'a target the router cannot take matches nothing');
  });

  it('refuses a path that another letter case makes another route (/Admin against a public /:page)', () => {
    const ambiguity = ambiguityOf(table);
    assert.match(ambiguity('GET', '/ADMIN/users') ?? '', /GET \/admin\/users" in another letter case/);
    assert.match(ambiguity('GET', '/admin/Users') ?? '', /another letter case/);
    assert.equal(ambiguity('GET', '/admin/users'), null);
    assert.equal(ambiguity('GET', '/About'), null, 'a param in any case is the same route');
    assert.match(ambiguity('GET', '/Orders/AbC') ?? '', /GET \/orders\/:id/, 'no route as sent, one in another case');
    assert.equal(ambiguity('GET', '/nothing/here'), null, 'no route in any case: refused later as unknown');
  });

  it('refuses a trailing slash that makes another route (/admin/users/ against a public wildcard)', () => {
    const ambiguity = ambiguityOf({ 'GET /*': { public: true }, 'GET /admin/users': { action: 'admin:read' } });
    assert.match(ambiguity('GET', '/admin/users/') ?? '', /trailing slash/);
    assert.equal(ambiguity('GET', '/admin/users'), null);
    assert.equal(ambiguity('GET', '/docs/'), null, 'the wildcard either way');
  });

  it('takes a table that declares one path in two spellings', () => {
    const ambiguity = ambiguityOf({ 'GET /a': { public: true }, 'GET /a/': { public: true } });
    assert.equal(ambiguity('GET', '/a'), null);
  });

  it('refuses a method or path named beside the request line (X-HTTP-Method-Override, _method)', () => {
    const ambiguity = ambiguityOf(table);
    for (const name of [
      'X-HTTP-Method-Override',
      'x-http-method',
      'x-method-override',
      'x-original-url',
      'x-rewrite-url',
    ])
      assert.match(ambiguity('GET', '/about', { [name.toLowerCase()]: 'DELETE' }) ?? '', /frameworks apply/, name);
    assert.match(ambiguity('GET', '/about?_method=DELETE') ?? '', /_method/);
    assert.equal(ambiguity('GET', '/about?method=x&a_method=y'), null);
  });

  it('applies ambiguousPath first', () => {
    assert.match(ambiguityOf(table)('GET', '/x/..;/admin/users') ?? '', /";"/);
  });
});
