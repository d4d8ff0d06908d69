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
import type { VerifiedTxnToken } from './txn-token.ts';
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

describe('authorize: the per-token memo answers as the engine does', () => {
  const SCHEMA_TWO = `namespace Lockstep {
  action "orders:read" appliesTo { principal: Workload, resource: Service, context: RequestContext };
  action "orders:create" appliesTo { principal: Workload, resource: Service, context: RequestContext };
}`;
  const sources = (role: string) => ({
    schema: SCHEMA_TWO,
    policies: {
      'orders.cedar':
        `@id("read") permit (principal == Lockstep::Workload::"${GATEWAY.spiffeId}", ` +
        `action == Lockstep::Action::"orders:read", resource) when { context.roles.contains("${role}") };\n` +
        `@id("create") permit (principal, action == Lockstep::Action::"orders:create", resource) ` +
        `when { context.callerService == "web" && context.sub != "" };`,
    },
  });
  const WEB: PeerIdentity = Object.freeze({ ...GATEWAY, spiffeId: 'spiffe://shop.test/svc/web', service: 'web' });

  function token(sub: string, roles: string[]): VerifiedTxnToken {
    return {
      token: `t-${sub}-${roles.join(',')}`,
      claims: { sub, txn: `txn-${sub}` } as VerifiedTxnToken['claims'],
      kid: 'k',
      expiresAtMs: Date.now() + 60_000,
      roles,
      scope: [],
      tenant: undefined,
      requester: 'spiffe://shop.test/svc/web',
      lastDecision: { action: null, spiffeId: null, answer: null },
    };
  }

  it('for any sequence of callers, tokens, actions and policy versions (each asked again without the memo)', () => {
    const engine = createPolicyEngine();
    const fresh = createPolicyEngine();
    const step = createAuthorizeStep({ service: 'orders', engine });
    const plain = createAuthorizeStep({ service: 'orders', engine: fresh });
    const tokens = [token('alice', ['customer']), token('bob', ['clerk']), token('', ['customer'])];
    let seed = 7;
    const next = (n: number) => ((seed = (seed * 1103515245 + 12345) % 2 ** 31) % n) as number;
    const outcome = (decide: () => unknown) => {
      try {
        return JSON.stringify(decide());
      } catch (error) {
        return (error as GuardError).code;
      }
    };
    for (let i = 0; i < 2_000; i++) {
      if (i % 250 === 0) {
        // A new policy version: what a token remembered must not answer for it.
        const set = policySetFromSources(sources(i % 500 === 0 ? 'customer' : 'clerk'));
        engine.load(set);
        fresh.load(set);
      }
      const peer = next(2) === 0 ? GATEWAY : WEB;
      const txn = tokens[next(tokens.length)] as VerifiedTxnToken;
      const action = next(2) === 0 ? 'orders:read' : 'orders:create';
      // The plain step gets a copy of the token, so that it never has a memo to answer from.
      const copy = { ...txn, lastDecision: { action: null, spiffeId: null, answer: null } };
      assert.equal(
        outcome(() => step.decide(peer, txn, action)),
        outcome(() => plain.decide(peer, copy, action)),
        `call ${i}: ${peer.service} ${txn.claims.sub} ${action}`,
      );
    }
  });
});
