/**
 * The authorize step with the real Cedar engine: what the policy sees of a request that has no
 * verified Txn-Token (a dry run lets it through to the policy, so that it can say what it would
 * decide). Found missing by the mutation run (docs/mutation.md): the example policies never read
 * these defaults.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { createPolicyEngine, policySetFromSources } from '@lockstep/policy';
import { GuardError } from '../errors.ts';
import type { PeerIdentity } from './transport.ts';
import { createAuthorizeStep } from './authorize.ts';

const GATEWAY: PeerIdentity = Object.freeze({
  spiffeId: 'spiffe://shop.test/svc/gateway',
  service: 'gateway',
  notAfterMs: Date.now() + 3_600_000,
  scanner: false,
});
const SCHEMA = `namespace Lockstep {
  action "orders:read" appliesTo { principal: Workload, resource: Service, context: RequestContext };
}`;

function stepWith(condition: string) {
  const engine = createPolicyEngine();
  engine.load(
    policySetFromSources({
      schema: SCHEMA,
      policies: {
        'orders.cedar':
          `@id("no-token") permit (principal == Lockstep::Workload::"${GATEWAY.spiffeId}", ` +
          `action == Lockstep::Action::"orders:read", resource == Lockstep::Service::"orders") when { ${condition} };`,
      },
    }),
  );
  return createAuthorizeStep({ service: 'orders', engine });
}

describe('authorize: the context of a request without a verified token', () => {
  it('has sub "", no roles, no scope and requester "" — nothing a policy could mistake for a user', () => {
    const step = stepWith(
      'context.sub == "" && context.roles.isEmpty() && context.scope.isEmpty() && context.requester == ""' +
        ' && context.callerService == "gateway" && !(context has owner) && !(context has tenant)',
    );
    assert.equal(step.decide(GATEWAY, null, 'orders:read').policyIds[0], 'no-token');
  });

  it('is denied by a policy that needs any of them', () => {
    for (const condition of ['context.sub != ""', 'context.roles.contains("customer")', 'context.requester != ""']) {
      assert.throws(
        () => stepWith(condition).decide(GATEWAY, null, 'orders:read'),
        (error: unknown) => error instanceof GuardError && error.code === 'LOCKSTEP_ERR_DENIED',
        condition,
      );
    }
  });
});
