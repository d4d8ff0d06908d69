import assert from 'node:assert/strict';
import diagnostics from 'node:diagnostics_channel';
import { describe, it } from 'node:test';
import {
  DECISION_CHANNEL,
  auditEnabled,
  decisionToJson,
  publishDecision,
  subscribeDecisions,
  type DecisionEvent,
} from './audit.ts';

function decisionEvent(requestId: string): DecisionEvent {
  return {
    time: new Date(0).toISOString(),
    service: 'orders',
    requestId,
    caller: 'spiffe://shop.test/svc/gateway',
    sub: 'alice',
    txn: 'txn-1',
    method: 'GET',
    route: '/orders/:id',
    action: 'GET /orders/:id',
    resource: 'Lockstep::Service::"orders"',
    decision: 'allow',
    policyIds: [],
    policyVersion: 'v1',
    reason: 'LOCKSTEP_ALLOW',
    dryRun: false,
    latencyMs: 0.1,
    traceId: null,
  };
}

describe('decision events', () => {
  it('publishes on lockstep:guard:decision', () => {
    assert.equal(DECISION_CHANNEL, 'lockstep:guard:decision');
  });

  it('does not touch the event when nobody subscribes', () => {
    assert.equal(auditEnabled(), false);
    const touched: string[] = [];
    const event = new Proxy(decisionEvent('r-0'), {
      get(target, property, receiver) {
        touched.push(String(property));
        return Reflect.get(target, property, receiver) as unknown;
      },
      ownKeys(target) {
        touched.push('ownKeys');
        return Reflect.ownKeys(target);
      },
    });
    publishDecision(event);
    assert.deepEqual(touched, []);
  });

  it('delivers each published event, as is, to every subscriber until it unsubscribes', () => {
    const first: DecisionEvent[] = [];
    const second: unknown[] = [];
    const unsubscribe = subscribeDecisions((event) => first.push(event));
    const raw = (message: unknown) => second.push(message);
    diagnostics.subscribe(DECISION_CHANNEL, raw);
    try {
      assert.equal(auditEnabled(), true);
      const event = decisionEvent('r-1');
      publishDecision(event);
      assert.equal(first.length, 1);
      assert.equal(first[0], event);
      assert.deepEqual(second, [event]);

      unsubscribe();
      publishDecision(decisionEvent('r-2'));
      assert.equal(first.length, 1, 'no event after unsubscribe');
      assert.equal(second.length, 2, 'other subscribers still receive events');
    } finally {
      diagnostics.unsubscribe(DECISION_CHANNEL, raw);
    }
    assert.equal(auditEnabled(), false);
  });
});

describe('decisionToJson', () => {
  it('writes exactly what JSON.stringify writes, for ordinary and hostile strings', () => {
    const hostile = 'a"b\\c\u0000d\u001f\u2028e\ud800f😀';
    for (const strings of [
      ['orders', 'alice'],
      [hostile, hostile],
    ] as const) {
      const event = {
        time: '2026-11-22T19:00:00.000Z',
        service: strings[0],
        requestId: 'r-1',
        caller: `spiffe://shop.test/svc/${strings[0]}`,
        sub: strings[1],
        txn: null,
        method: 'GET',
        route: '/orders/:id',
        action: strings[1],
        resource: strings[0],
        decision: 'deny' as const,
        policyIds: [strings[1], 'p2'],
        policyVersion: null,
        reason: 'LOCKSTEP_ERR_DENIED',
        dryRun: true,
        latencyMs: 0.125,
        traceId: null,
      };
      assert.equal(decisionToJson(event), JSON.stringify(event));
    }
  });

  it('never reuses the encoded part of an earlier event of the same transaction once any of its fields differs', () => {
    const base = decisionEvent('r-1');
    const variants: DecisionEvent[] = [
      base,
      { ...base, requestId: 'r-2', latencyMs: 0.2, traceId: '0af7651916cd43dd8448eb211c80319c' },
      { ...base, decision: 'deny', reason: 'LOCKSTEP_ERR_DENIED' },
      { ...base, policyIds: ['p1'] },
      { ...base, policyIds: ['p2'] },
      { ...base, caller: 'spiffe://shop.test/svc/other' },
      { ...base, sub: 'mallory' },
      { ...base, method: 'DELETE', action: 'DELETE /orders/:id' },
      { ...base, route: null, action: null },
      { ...base, policyVersion: 'v2' },
      { ...base, dryRun: true },
      { ...base, resource: 'billing' },
      { ...base, txn: null },
      // A probe: verified at transport (probeAs present), and one refused there but proven by the scanner.
      {
        ...base,
        probe: 'spiffe://shop.test/scanner/ci',
        probeAs: 'spiffe://shop.test/svc/gateway',
        probeRequester: null,
      },
      { ...base, caller: null, probe: 'spiffe://shop.test/scanner/ci' },
      base,
    ];
    for (const event of variants) assert.equal(decisionToJson(event), JSON.stringify(event));
    // A mutable policy-id array changed in place after it was encoded must not be served from memory.
    const ids = ['p1'];
    const mutable = { ...base, txn: 'txn-mutable', policyIds: ids };
    assert.equal(decisionToJson(mutable), JSON.stringify(mutable));
    ids[0] = 'p9';
    assert.equal(decisionToJson(mutable), JSON.stringify(mutable));
  });
});
