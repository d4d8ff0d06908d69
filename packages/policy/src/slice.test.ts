import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { createPolicyEngine } from './engine.ts';
import { gateway, ordersWorkload, shopSchema, shopSources, userContext } from './fixtures/shop.ts';
import { policySetFromSources } from './from-sources.ts';
import { sliceFor } from './slice.ts';

const S = (name: string) => `Lockstep::Service::"${name}"`;

// id → policy body; each case says which services' slices keep it.
const cases: Record<string, { text: string; orders: boolean; payments: boolean }> = {
  unconstrained: { text: 'permit(principal, action, resource);', orders: true, payments: true },
  'eq-orders': { text: `permit(principal, action, resource == ${S('orders')});`, orders: true, payments: false },
  'in-orders': { text: `permit(principal, action, resource in ${S('orders')});`, orders: true, payments: false },
  'is-service': { text: 'permit(principal, action, resource is Lockstep::Service);', orders: true, payments: true },
  'is-other-type': { text: 'permit(principal, action, resource is Lockstep::Order);', orders: false, payments: false },
  'is-in-payments': {
    text: `permit(principal, action, resource is Lockstep::Service in ${S('payments')});`,
    orders: false,
    payments: true,
  },
  'when-in-set': {
    text: `permit(principal, action, resource) when { resource in [${S('payments')}, ${S('inventory')}] };`,
    orders: false,
    payments: true,
  },
  'when-and': {
    text: `permit(principal, action, resource) when { context.sub == "x" && resource == ${S('payments')} };`,
    orders: false,
    payments: true,
  },
  'when-or-unknown': {
    text: `permit(principal, action, resource) when { resource == ${S('payments')} || context.sub == "x" };`,
    orders: true,
    payments: true,
  },
  'when-not': {
    text: `permit(principal, action, resource) when { !(resource == ${S('orders')}) };`,
    orders: false,
    payments: true,
  },
  'when-ne': {
    text: `permit(principal, action, resource) when { resource != ${S('orders')} };`,
    orders: false,
    payments: true,
  },
  'in-other-type-kept': {
    text: 'permit(principal, action, resource in Lockstep::Group::"g");',
    orders: true,
    payments: true,
  },
  'forbid-unconstrained': {
    text: 'forbid(principal, action, resource) when { context.sub == "mallory" };',
    orders: true,
    payments: true,
  },
  'forbid-payments': {
    text: `forbid(principal, action, resource == ${S('payments')});`,
    orders: false,
    payments: true,
  },
  'forbid-unless-orders': {
    text: `forbid(principal, action, resource) unless { resource == ${S('orders')} || context.sub == "x" };`,
    orders: false,
    payments: true,
  },
};

const set = policySetFromSources({
  schema: { 'shop.cedarschema': shopSchema, 'types.cedarschema': 'namespace Lockstep { entity Order; entity Group; }' },
  policies: {
    'cases.cedar': Object.entries(cases)
      .map(([id, c]) => `@id("${id}")\n${c.text}`)
      .join('\n\n'),
  },
});

describe('sliceFor', () => {
  for (const service of ['orders', 'payments'] as const) {
    it(`keeps exactly the policies that can apply to ${service}`, () => {
      const slice = sliceFor(set, service);
      const expected = Object.entries(cases)
        .filter(([, c]) => c[service])
        .map(([id]) => id)
        .sort();
      assert.deepEqual(Object.keys(slice.policies), expected);
      assert.equal(slice.service, service);
      assert.equal(slice.schemaText, set.schemaText);
      assert.deepEqual(slice.sources['unconstrained'], set.sources['unconstrained']);
    });
  }

  it('gives a slice its own version, stable for the same service', () => {
    const a = sliceFor(set, 'orders');
    assert.notEqual(a.version, set.version);
    assert.notEqual(a.version, sliceFor(set, 'payments').version);
    assert.equal(a.version, sliceFor(set, 'orders').version);
    assert.equal(sliceFor(a, 'orders').version, a.version);
  });

  it('versions by content plus service: a slice that keeps everything still differs from the whole set', () => {
    const all = policySetFromSources({
      schema: shopSchema,
      policies: { 'a.cedar': '@id("a") permit(principal, action, resource);' },
    });
    const slice = sliceFor(all, 'orders');
    assert.deepEqual(slice.policies, all.policies);
    assert.notEqual(slice.version, all.version);
  });

  it('decides like the whole set for its service', () => {
    const shop = policySetFromSources(shopSources);
    const whole = createPolicyEngine();
    const sliced = createPolicyEngine();
    whole.load(shop);
    sliced.load(sliceFor(shop, 'orders'));
    assert.ok(!Object.hasOwn(sliceFor(shop, 'orders').policies, 'payments-charge-from-orders'));
    assert.ok(Object.hasOwn(sliceFor(shop, 'orders').policies, 'deny-blocked-tenant'));
    for (const principal of [gateway, ordersWorkload]) {
      for (const action of ['orders:create', 'orders:read', 'payments:charge']) {
        for (const context of [userContext(), userContext({ roles: ['admin'] }), userContext({ tenant: 'blocked' })]) {
          const request = { principal, action, resource: 'orders', context };
          const a = whole.authorize(request);
          const b = sliced.authorize(request);
          assert.deepEqual([b.decision, b.policyIds], [a.decision, a.policyIds], JSON.stringify(request));
        }
      }
    }
  });

  it('refuses to re-slice a slice for another service', () => {
    assert.throws(() => sliceFor(sliceFor(set, 'orders'), 'payments'), TypeError);
    assert.throws(() => sliceFor(set, ''), TypeError);
  });
});
