import assert from 'node:assert/strict';
import { subscribe, unsubscribe } from 'node:diagnostics_channel';
import { describe, it } from 'node:test';
import { createPolicyEngine, policyAppliedChannel } from './engine.ts';
import { PolicyError } from './errors.ts';
import { gateway, ordersWorkload, shopSchema, shopSources, userContext } from './fixtures/shop.ts';
import { policySetFromSources } from './from-sources.ts';
import type { PolicySet } from './policy-set.ts';
import { sliceFor } from './slice.ts';
import { computePolicySetVersion } from './version.ts';

const shop = policySetFromSources(shopSources);
const create = { principal: gateway, action: 'orders:create', resource: 'orders', context: userContext() };
const readAsAdmin = {
  principal: ordersWorkload,
  action: 'orders:read',
  resource: 'orders',
  context: userContext({ roles: ['admin'] }),
};

function loaded(set: PolicySet = shop, cacheSize?: number) {
  const engine = createPolicyEngine(cacheSize === undefined ? {} : { cacheSize });
  engine.load(set);
  return engine;
}

describe('createPolicyEngine', () => {
  it('allows with the @id of the permitting policy, and denies by default', () => {
    const engine = loaded();
    const allowed = engine.authorize(create);
    assert.deepEqual(allowed, {
      decision: 'allow',
      policyIds: ['orders-create-from-gateway'],
      errors: [],
      version: shop.version,
      cached: false,
    });
    const denied = engine.authorize({ ...create, principal: ordersWorkload });
    assert.equal(denied.decision, 'deny');
    assert.deepEqual(denied.policyIds, []);
  });

  it('permits by role from the context', () => {
    const engine = loaded();
    assert.equal(engine.authorize(readAsAdmin).decision, 'allow');
    assert.deepEqual(engine.authorize(readAsAdmin).policyIds, ['orders-read-admin']);
    assert.equal(engine.authorize({ ...readAsAdmin, context: userContext({ roles: ['clerk'] }) }).decision, 'deny');
  });

  it('lets a forbid win and names it', () => {
    const result = loaded().authorize({ ...create, context: userContext({ tenant: 'blocked' }) });
    assert.equal(result.decision, 'deny');
    assert.deepEqual(result.policyIds, ['deny-blocked-tenant']);
  });

  it('answers a request that fails validation with a deny and the reason, not a throw', () => {
    const engine = loaded();
    const unknownAction = engine.authorize({ ...create, action: 'orders:delete' });
    assert.equal(unknownAction.decision, 'deny');
    assert.match(unknownAction.errors.join(), /orders:delete/);
    const badContext = engine.authorize({ ...create, context: { ...userContext(), extra: 'x' } as never });
    assert.equal(badContext.decision, 'deny');
    assert.match(badContext.errors.join(), /extra/);
  });

  it('serves a repeated request from the cache without asking Cedar', () => {
    const engine = loaded();
    assert.equal(engine.authorize(readAsAdmin).cached, false);
    const second = engine.authorize(readAsAdmin);
    assert.equal(second.cached, true);
    assert.equal(second.decision, 'allow');
    const { bytes, ...counts } = engine.stats();
    assert.deepEqual(counts, { hits: 1, misses: 1, size: 1 });
    assert.ok(bytes > 300, 'its key and entry are counted');
  });

  it('shares one cache entry between requests Cedar cannot tell apart (set order, duplicates, key order)', () => {
    const engine = loaded();
    engine.authorize({ ...readAsAdmin, context: userContext({ roles: ['admin', 'clerk'] }) });
    const reordered = {
      callerService: 'gateway',
      sub: 'alice',
      scope: ['orders'],
      requester: gateway,
      roles: ['clerk', 'admin', 'clerk'],
    };
    assert.equal(engine.authorize({ ...readAsAdmin, context: reordered }).cached, true);
    assert.equal(engine.authorize({ ...readAsAdmin, context: userContext({ roles: ['admin'] }) }).cached, false);
  });

  it('evicts the least recently used decision beyond cacheSize', () => {
    const engine = loaded(shop, 2);
    const a = create;
    const b = readAsAdmin;
    const c = { ...create, principal: ordersWorkload };
    engine.authorize(a);
    engine.authorize(b);
    engine.authorize(a); // a is now the most recent
    engine.authorize(c); // evicts b
    assert.equal(engine.authorize(a).cached, true);
    assert.equal(engine.authorize(b).cached, false);
    assert.equal(engine.stats().size, 2);
    const uncached = loaded(shop, 0);
    uncached.authorize(a);
    assert.equal(uncached.authorize(a).cached, false);
  });

  it('swaps atomically: after load(new) decisions follow the new set, never an old cached one', () => {
    const engine = loaded();
    assert.equal(engine.authorize(readAsAdmin).decision, 'allow');
    const stricter = policySetFromSources({
      ...shopSources,
      policies: {
        ...shopSources.policies,
        'policies/orders.cedar': shopSources.policies['policies/orders.cedar'].replace('"admin"', '"root"'),
      },
    });
    engine.load(stricter);
    assert.equal(engine.version, stricter.version);
    assert.equal(engine.stats().size, 0);
    const after = engine.authorize(readAsAdmin);
    assert.deepEqual([after.decision, after.cached, after.version], ['deny', false, stricter.version]);
    engine.load(shop);
    assert.equal(engine.authorize(readAsAdmin).decision, 'allow');
  });

  it('keeps the previous set when a load fails', () => {
    const engine = loaded();
    engine.authorize(create);
    const edited = {
      ...shop,
      policies: { ...shop.policies, extra: '@id("extra") permit(principal, action, resource);' },
    };
    assert.throws(() => engine.load(edited), { name: 'PolicyError', code: 'LOCKSTEP_POLICY_LOAD' });
    const brokenPolicies = { a: 'permit(' };
    const unparsable = {
      ...shop,
      policies: brokenPolicies,
      version: computePolicySetVersion({ ...shop, policies: brokenPolicies }),
    };
    assert.throws(
      () => engine.load(unparsable),
      (error: unknown) => error instanceof PolicyError && /previous set stays active/.test(error.message),
    );
    const brokenSchema = {
      ...shop,
      schemaText: 'namespace {',
      version: computePolicySetVersion({ ...shop, schemaText: 'namespace {' }),
    };
    assert.throws(() => engine.load(brokenSchema), { code: 'LOCKSTEP_POLICY_LOAD' });
    assert.equal(engine.version, shop.version);
    const result = engine.authorize(create);
    assert.deepEqual([result.decision, result.cached], ['allow', true]);
  });

  it('throws LOCKSTEP_POLICY_NOT_LOADED before the first load', () => {
    const engine = createPolicyEngine();
    assert.equal(engine.version, null);
    assert.throws(() => engine.authorize(create), { name: 'PolicyError', code: 'LOCKSTEP_POLICY_NOT_LOADED' });
  });

  it('loaded with a slice, denies requests for other services instead of guessing', () => {
    const engine = loaded(sliceFor(shop, 'payments'));
    const result = engine.authorize(create);
    assert.equal(result.decision, 'deny');
    assert.match(result.errors.join(), /slice for "payments"/);
  });

  it('publishes lockstep:policy:applied on each successful load', () => {
    const seen: unknown[] = [];
    const listener = (message: unknown) => seen.push(message);
    subscribe(policyAppliedChannel.name, listener);
    try {
      const engine = loaded();
      const other = policySetFromSources({
        schema: shopSchema,
        policies: { 'a.cedar': '@id("a") permit(principal, action, resource);' },
      });
      engine.load(other);
    } finally {
      unsubscribe(policyAppliedChannel.name, listener);
    }
    assert.equal(seen.length, 2);
    assert.deepEqual(seen[0], { version: shop.version, service: null, previousVersion: null });
    assert.equal((seen[1] as { previousVersion: string }).previousVersion, shop.version);
  });

  it('treats misuse as TypeError', () => {
    assert.throws(() => createPolicyEngine({ cacheSize: -1 }), TypeError);
    assert.throws(() => loaded().authorize({ ...create, principal: 1 as unknown as string }), TypeError);
    assert.throws(() => createPolicyEngine().load(null as unknown as PolicySet), TypeError);
  });
});
