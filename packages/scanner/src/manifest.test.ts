import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { ManifestError, parseManifest } from './manifest.ts';

describe('parseManifest', () => {
  it('defaults to two role-less test users and nothing else', () => {
    const manifest = parseManifest(undefined);
    assert.notEqual(manifest.users.a.sub, manifest.users.b.sub);
    assert.deepEqual([manifest.objects, manifest.bodies, manifest.accept, manifest.services], [[], [], [], []]);
  });

  it('reads users, objects, acceptances and unregistered services', () => {
    const manifest = parseManifest({
      users: { a: { sub: 'alice', roles: ['customer'], tenant: 'demo' }, b: { sub: 'bob', roles: ['customer'] } },
      objects: [{ service: 'orders', route: 'GET /orders/:id', params: { id: 'demo-alice' }, owner: 'a' }],
      accept: [
        { attack: 'authz.missing-role', service: 'inventory', route: 'GET /items', reason: 'anyone may browse' },
      ],
      services: [
        {
          name: 'legacy',
          endpoints: ['127.0.0.1:4200', '[::1]:4200'],
          routes: [{ method: 'get', template: '/report' }],
        },
      ],
    });
    assert.equal(manifest.users.a.tenant, 'demo');
    assert.deepEqual(manifest.objects[0]?.params, { id: 'demo-alice' });
    assert.deepEqual(manifest.services[0]?.routes[0], {
      method: 'GET',
      template: '/report',
      action: 'GET /report',
      public: false,
      owner: false,
      validatesBody: false,
    });
  });

  it('reads a body each route admits, as JSON text', () => {
    const body = { item: 'tea', quantity: 1 };
    const manifest = parseManifest({ bodies: [{ service: 'orders', route: 'POST /orders', body }] });
    assert.deepEqual(manifest.bodies, [
      { service: 'orders', route: 'POST /orders', body: '{"item":"tea","quantity":1}' },
    ]);
  });

  it('refuses what it does not understand, saying where', () => {
    const cases: [unknown, RegExp][] = [
      [{ user: {} }, /unknown key "user"/],
      [{ users: { a: { sub: 'same', roles: [] }, b: { sub: 'same', roles: [] } } }, /two different subjects/],
      [{ accept: [{ attack: 'authz.bola', service: 'orders' }] }, /accept\[0\]\.reason/],
      [{ services: [{ name: 'x', endpoints: ['http://127.0.0.1:80'], routes: [] }] }, /host:port/],
      [{ services: [{ name: 'x', endpoints: [], routes: [] }] }, /at least one host:port/],
      [{ objects: [{ service: 'orders', route: 'GET /orders/:id', params: {}, owner: 'b' }] }, /owner must be a/],
      [
        { bodies: [{ service: 'orders', route: '/orders', body: {} }] },
        /bodies\[0\]\.route must be a method and a route/,
      ],
      [
        { bodies: [{ service: 'orders', route: 'POST /orders', body: '{"a":1}' }] },
        /bodies\[0\]\.body \(a JSON object/,
      ],
      [
        { bodies: [{ service: 'orders', route: 'POST /orders', body: { pad: 'a'.repeat(70_000) } }] },
        /over 65536 bytes/,
      ],
    ];
    for (const [value, message] of cases)
      assert.throws(
        () => parseManifest(value, 'scan.yaml'),
        (error: unknown) =>
          error instanceof ManifestError && message.test(error.message) && error.message.startsWith('scan.yaml:'),
        JSON.stringify(value),
      );
  });
});
