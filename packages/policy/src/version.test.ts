import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { describe, it } from 'node:test';
import { globalPolicies, ordersPolicies, paymentsPolicies, shopSchema, shopSources } from './fixtures/shop.ts';
import { policySetFromSources } from './from-sources.ts';
import { computePolicySetVersion } from './version.ts';

describe('policy set version', () => {
  it('does not depend on file names, file order or how policies are spread over files', () => {
    const a = policySetFromSources(shopSources);
    const b = policySetFromSources({
      schema: { 'z.cedarschema': shopSchema },
      policies: { 'all.cedar': [paymentsPolicies, ordersPolicies, globalPolicies].join('\n') },
    });
    assert.equal(a.version, b.version);
  });

  it('changes with any policy text, the schema, or the service', () => {
    const base = policySetFromSources(shopSources);
    const edited = policySetFromSources({
      ...shopSources,
      policies: { ...shopSources.policies, 'policies/orders.cedar': ordersPolicies.replace('"admin"', '"root"') },
    });
    const withSchema = policySetFromSources({
      ...shopSources,
      schema: shopSchema.replace('namespace Lockstep {', 'namespace Lockstep {\n  entity Order in [Service];'),
    });
    assert.notEqual(edited.version, base.version);
    assert.notEqual(withSchema.version, base.version);
    assert.notEqual(computePolicySetVersion({ ...base, service: 'orders' }), base.version);
  });

  it('is sha256 over the documented canonical JSON (other implementations can recompute it)', () => {
    const content = { schemaText: 'S', policies: { b: 'B', a: 'A' }, service: 'orders' };
    const expected = createHash('sha256')
      .update(
        JSON.stringify([
          'lockstep-policy-set/1',
          'S',
          'orders',
          [
            ['a', 'A'],
            ['b', 'B'],
          ],
        ]),
      )
      .digest('hex');
    assert.equal(computePolicySetVersion(content), expected);
  });
});
