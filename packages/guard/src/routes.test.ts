import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { assertConfigError } from '../test/assert-config-error.ts';
import { defaultAction, routeSecurity, type RouteConfig } from './routes.ts';

describe('defaultAction', () => {
  it('is "<METHOD> <template>" with the method in upper case', () => {
    assert.equal(defaultAction('GET', '/orders/:id'), 'GET /orders/:id');
    assert.equal(defaultAction('post', '/orders'), 'POST /orders');
  });
});

describe('routeSecurity', () => {
  it('enforces by default, with the default action', () => {
    const route = routeSecurity('get', '/orders/:id', undefined, 'GET /orders/:id');
    assert.deepEqual(route, {
      method: 'GET',
      template: '/orders/:id',
      action: 'GET /orders/:id',
      public: false,
      dryRun: false,
      owner: null,
      validatesBody: false,
    });
    assert.ok(Object.isFrozen(route));
    assert.deepEqual(routeSecurity('GET', '/orders/:id', {}, 'x'), route);
  });

  it('keeps an explicit action and the public and dryRun flags', () => {
    assert.deepEqual(routeSecurity('POST', '/orders', { action: 'orders:create', dryRun: true }, 'POST /orders'), {
      method: 'POST',
      template: '/orders',
      action: 'orders:create',
      public: false,
      dryRun: true,
      owner: null,
      validatesBody: false,
    });
    const health = routeSecurity('GET', '/health', { public: true, dryRun: false }, 'GET /health');
    assert.equal(health.public, true);
    assert.equal(health.dryRun, false);
    assert.equal(health.action, 'GET /health');
  });

  it('refuses a config that is not an object', () => {
    assertConfigError(
      () => routeSecurity('GET', '/x', null as unknown as RouteConfig, 'GET /x'),
      'GET /x: lockstep route config must be an object',
      "{ action: 'orders:create' }",
    );
    assertConfigError(
      () => routeSecurity('GET', '/x', 'orders:read' as unknown as RouteConfig, 'GET /x'),
      'must be an object',
    );
  });

  it('refuses an unknown option and names the known ones', () => {
    assertConfigError(
      () => routeSecurity('GET', '/x', { actoin: 'orders:read' } as RouteConfig, 'GET /x'),
      'GET /x: unknown lockstep route option "actoin"',
      'use action, public, dryRun, owner or coerceBody',
    );
    assertConfigError(
      () => routeSecurity('GET', '/x', { unsafePublic: true } as RouteConfig, 'GET /x'),
      '"unsafePublic"',
    );
  });

  it('refuses flags that are not booleans', () => {
    assertConfigError(
      () => routeSecurity('GET', '/x', { public: 'true' } as unknown as RouteConfig, 'GET /x'),
      'GET /x: public must be true or false',
    );
    assertConfigError(
      () => routeSecurity('GET', '/x', { dryRun: 1 } as unknown as RouteConfig, 'GET /x'),
      'dryRun must be true or false',
    );
  });

  it('refuses an action that is empty, padded, non-printable or over 200 characters', () => {
    for (const action of ['', ' orders:read', 'orders:read ', 'orders\nread', 'ördérs', 'a'.repeat(201), 42]) {
      assertConfigError(
        () => routeSecurity('GET', '/x', { action } as unknown as RouteConfig, 'GET /x'),
        'action must be 1–200 printable characters',
        "e.g. 'orders:create'",
      );
    }
    assert.equal(routeSecurity('GET', '/x', { action: 'a'.repeat(200) }, 'x').action.length, 200);
  });
});
