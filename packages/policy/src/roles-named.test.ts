import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { shopSchema } from './fixtures/shop.ts';
import { policySetFromSources } from './from-sources.ts';
import { rolesNamed } from './roles-named.ts';

const W = 'Lockstep::Workload::"spiffe://shop.test/svc/gateway"';
const setOf = (...policies: string[]) =>
  policySetFromSources({
    schema: { 'shop.cedarschema': shopSchema },
    policies: { 'roles.cedar': policies.map((text, i) => `@id("p${i}")\n${text}`).join('\n\n') },
  });

describe('rolesNamed', () => {
  it('finds every role a policy tests for with contains, containsAll and containsAny, sorted', () => {
    const set = setOf(
      `permit(principal == ${W}, action, resource) when { context.roles.contains("customer") };`,
      `permit(principal == ${W}, action, resource) when { context.roles.containsAny(["support", "admin"]) && context.sub != "" };`,
      `forbid(principal, action, resource) when { context.roles.containsAll(["intern"]) };`,
      'permit(principal, action, resource) when { context.sub == "roles" };',
    );
    assert.deepEqual(rolesNamed(set), { roles: ['admin', 'customer', 'intern', 'support'], complete: true });
  });

  it('says it cannot tell when a policy reads the roles any other way', () => {
    for (const condition of [
      'context.roles.isEmpty()',
      'context.roles.contains(context.sub)',
      'context.roles == ["admin"]',
    ]) {
      const set = setOf(
        `permit(principal == ${W}, action, resource) when { context.roles.contains("customer") || ${condition} };`,
      );
      assert.deepEqual(rolesNamed(set), { roles: ['customer'], complete: false }, condition);
    }
  });
});
