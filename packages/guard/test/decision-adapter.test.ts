/**
 * The decision adapter (`lockstepDecisions`, what the decision service decides with) on facts: which
 * route an AuthZEN action is decided for when several routes perform it, and the requests that match
 * no route because the server behind the proxy could serve another one (a fragment, `_method`,
 * `X-HTTP-Method-Override`). Real guard, real Cedar, real certificates.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import type { Guard } from '../src/index.ts';
import { lockstepDecisions, type Decisions } from '../src/adapters/decision.ts';
import { guardFor, TRUST_DOMAIN, world, type World } from './fixture.ts';

const GATEWAY = `spiffe://${TRUST_DOMAIN}/svc/gateway`;
let w: World;
let guard: Guard;
let decisions: Decisions;

before(async () => {
  w = await world();
  guard = await guardFor(w);
  decisions = lockstepDecisions(guard, {
    // Declared first on purpose: a dry-run route must not speak for the enforced route of its action.
    'DELETE /drafts/:id': { action: 'orders:delete', dryRun: true },
    'DELETE /orders/:id': { action: 'orders:delete' },
    'GET /orders/:id': { action: 'orders:read' },
  });
});
after(() => guard.close());

describe('lockstepDecisions', () => {
  it('decides an action named without a request for its enforced route, not a dry-run one declared first', async () => {
    const decision = await decisions.decide({
      peerCertificateChain: undefined,
      assertedSpiffeId: GATEWAY,
      action: 'orders:delete',
      method: 'AUTHZEN',
      path: '',
      headers: {},
    });
    assert.deepEqual([decision.allowed, decision.code], [false, 'LOCKSTEP_ERR_TXN_TOKEN_MISSING']);
    assert.equal(decision.admission.dryRun, false);
  });

  it('matches no route with a fragment, a _method query or a method-override header (after transport)', async () => {
    const token = await w.customerToken();
    const facts = { peerCertificateChain: w.svids.gateway.chainPem, method: 'GET', headers: { 'txn-token': token } };
    const allowed = await decisions.decide({ ...facts, path: '/orders/7' });
    assert.equal(allowed.allowed, true, String(allowed.code));
    for (const [path, headers] of [
      ['/orders/7#/x', {}],
      ['/orders/7?_method=DELETE', {}],
      ['/orders/7', { 'X-HTTP-Method-Override': 'DELETE' }],
    ] as const) {
      const decision = await decisions.decide({ ...facts, path, headers: { ...facts.headers, ...headers } });
      assert.equal(decision.code, 'LOCKSTEP_ERR_ROUTE_UNKNOWN', path);
    }
    const outsider = await decisions.decide({ ...facts, peerCertificateChain: undefined, path: '/orders/7#/x' });
    assert.equal(outsider.code, 'LOCKSTEP_ERR_PEER_CERT_MISSING', 'transport first: an outsider learns nothing');
  });
});
