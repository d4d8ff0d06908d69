/**
 * The shop's policy test cases: who may do what, on whose behalf, decided by the real policy set
 * in examples/shop/policies (strictly validated, evaluated by Cedar). A change to the policies that
 * breaks one of these is caught here before it is pushed anywhere.
 */
import assert from 'node:assert/strict';
import { before, describe, it } from 'node:test';
import { createPolicyEngine, loadPolicyDir, sliceFor, type PolicySet, type RequestContext } from '@lockstep/policy';
import { SHOP_POLICIES } from '../launch.ts';

const svc = (name: string) => `spiffe://shop.test/svc/${name}`;
const customer = (sub: string, extra: Partial<RequestContext> = {}): RequestContext => ({ sub, roles: ['customer'], scope: [], requester: svc('gateway'), callerService: 'gateway', ...extra });

// principal, action, service, context → expected decision (and the policy that decides an allow)
const CASES: readonly [string, string, string, string, RequestContext, 'allow' | 'deny', string?][] = [
  ['a customer places an order through the gateway', svc('gateway'), 'orders:create', 'orders', customer('alice'), 'allow', 'gateway-customers-place-and-list-orders'],
  ['a user without the customer role cannot order', svc('gateway'), 'orders:create', 'orders', { ...customer('eve'), roles: [] }, 'deny'],
  ['a customer reads her own order', svc('gateway'), 'orders:read', 'orders', customer('alice', { owner: 'alice' }), 'allow', 'customers-read-their-own-orders'],
  ['a customer cannot read another customer\'s order (BOLA)', svc('gateway'), 'orders:read', 'orders', customer('bob', { owner: 'alice' }), 'deny'],
  ['reading an order without an owner lookup is refused', svc('gateway'), 'orders:read', 'orders', customer('alice'), 'deny'],
  ['inventory cannot read orders', svc('inventory'), 'orders:read', 'orders', customer('alice', { owner: 'alice' }), 'deny'],
  ['orders reserves stock for a customer\'s gateway transaction', svc('orders'), 'inventory:reserve', 'inventory', { ...customer('alice'), callerService: 'orders' }, 'allow', 'orders-reserves-stock-for-customers'],
  ['orders cannot reserve for a transaction that did not start at the gateway', svc('orders'), 'inventory:reserve', 'inventory', { ...customer('alice'), callerService: 'orders', requester: svc('inventory') }, 'deny'],
  ['the gateway cannot reserve stock itself', svc('gateway'), 'inventory:reserve', 'inventory', customer('alice'), 'deny'],
  ['orders charges for a customer', svc('orders'), 'payments:charge', 'payments', { ...customer('alice'), callerService: 'orders' }, 'allow', 'orders-charges-customers'],
  ['a compromised inventory cannot charge', svc('inventory'), 'payments:charge', 'payments', { ...customer('alice'), callerService: 'inventory' }, 'deny'],
  ['the gateway cannot charge directly', svc('gateway'), 'payments:charge', 'payments', customer('alice'), 'deny'],
  ['only the gateway exchanges user access tokens', svc('gateway'), 'tts:exchange:access_token', 'tts', { sub: '', roles: [], scope: [], requester: svc('gateway'), callerService: 'gateway' }, 'allow', 'gateway-exchanges-user-access-tokens'],
  ['orders may not exchange user access tokens', svc('orders'), 'tts:exchange:access_token', 'tts', { sub: '', roles: [], scope: [], requester: svc('orders'), callerService: 'orders' }, 'deny'],
];

let set: PolicySet;
before(async () => {
  set = await loadPolicyDir(SHOP_POLICIES);
});

describe('the shop\'s policies', () => {
  for (const [title, principal, action, service, context, expected, policyId] of CASES) {
    it(title, () => {
      // Each service decides with its own slice, as its guard does.
      const engine = createPolicyEngine();
      engine.load(sliceFor(set, service));
      const result = engine.authorize({ principal, action, resource: service, context });
      assert.equal(result.decision, expected, `${title}: ${JSON.stringify(result)}`);
      if (policyId !== undefined) assert.deepEqual(result.policyIds, [policyId]);
      assert.deepEqual(result.errors, []);
    });
  }
});
