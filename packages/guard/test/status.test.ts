import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { describe, it } from 'node:test';
import { GUARD_VERSION } from '../src/index.ts';
import { guardFor, startOrders, world } from './fixture.ts';

describe('guard.status()', () => {
  it('reports what the guard enforces: identity, mode, policy version, SVID expiry and every declared route', async () => {
    const w = await world();
    const guard = await guardFor(w);
    const service = await startOrders('fastify', guard);
    try {
      const status = guard.status();
      assert.equal(status.service, 'orders');
      assert.equal(status.spiffeId, 'spiffe://shop.test/svc/orders');
      assert.equal(status.mode, 'enforce');
      assert.equal(status.policyVersion, guard.policyVersion);
      assert.ok(Date.parse(status.svidExpiresAt) > Date.now());
      assert.ok(status.routes.length > 0);
      assert.ok(status.routes.some((route) => route.action === 'orders:read'));
      assert.equal(status.guardVersion, GUARD_VERSION);
    } finally {
      await service.close();
      await guard.close();
    }
  });

  it('reports the version of the guard package itself', () => {
    const pkg = JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8')) as { version: string };
    assert.equal(GUARD_VERSION, pkg.version);
  });
});
