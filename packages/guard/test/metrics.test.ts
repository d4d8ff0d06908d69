import assert from 'node:assert/strict';
import { it } from 'node:test';
import { guardFor, startOrders, TRUST_DOMAIN, world } from './fixture.ts';

it('exposes Prometheus metrics: decisions by result and reason, latency, caches, SVID expiry, policy version', async () => {
  const w = await world();
  const guard = await guardFor(w, { metrics: true });
  const service = await startOrders('fastify', guard);
  try {
    const client = w.client(w.svids.gateway);
    const token = await w.customerToken();
    assert.equal((await client.request(`${service.url}/orders/1`, { headers: { 'txn-token': token } })).status, 200);
    assert.equal((await client.request(`${service.url}/orders/2`, { headers: { 'txn-token': token } })).status, 200);
    assert.equal(
      (await client.request(`${service.url}/orders/1`, { method: 'DELETE', headers: { 'txn-token': token } })).status,
      403,
    );
    const { contentType, body } = await guard.metrics();
    assert.match(contentType, /^text\/plain/);
    assert.match(body, /lockstep_guard_decisions_total\{decision="allow",reason="LOCKSTEP_ALLOW",service="orders"\} 2/);
    assert.match(
      body,
      /lockstep_guard_decisions_total\{decision="deny",reason="LOCKSTEP_ERR_DENIED",service="orders"\} 1/,
    );
    assert.match(body, /lockstep_guard_decision_seconds_count\{service="orders"\} 3/);
    assert.match(body, /lockstep_guard_cache_hit_ratio\{cache="tokens",service="orders"\} 0\.\d+/);
    assert.match(
      body,
      new RegExp(`lockstep_guard_policy_info\\{version="${guard.policyVersion}",service="orders"\\} 1`),
    );
    const expiry = Number(/lockstep_guard_svid_expiry_seconds\{service="orders"\} ([\d.]+)/.exec(body)?.[1]);
    assert.ok(expiry > 0 && expiry <= 24 * 3600, String(expiry));
    assert.match(body, /lockstep_guard_dry_run\{service="orders"\} 0/);
  } finally {
    await service.close();
    await guard.close();
  }
});

it("counts a scanner's probes apart from the decisions of real traffic", async () => {
  const w = await world();
  const guard = await guardFor(w, { metrics: true });
  const service = await startOrders('fastify', guard);
  try {
    const scanner = await w.ca.issueCert({ uris: [`spiffe://${TRUST_DOMAIN}/scanner/ci`] });
    const token = await w.customerToken();
    assert.equal(
      (await w.client(w.svids.gateway).request(`${service.url}/orders/1`, { headers: { 'txn-token': token } })).status,
      200,
    );
    assert.equal(
      (await w.client(scanner).request(`${service.url}/orders/1`, { headers: { 'txn-token': token } })).status,
      403,
    );
    const { body } = await guard.metrics();
    assert.match(body, /lockstep_guard_decisions_total\{decision="allow",reason="LOCKSTEP_ALLOW",service="orders"\} 1/);
    assert.doesNotMatch(
      body,
      /lockstep_guard_decisions_total\{decision="deny"/,
      'the probe is no denial of real traffic',
    );
    assert.match(body, /lockstep_guard_probes_total\{decision="deny",service="orders"\} 1/);
  } finally {
    await service.close();
    await guard.close();
  }
});

it('says how to turn metrics on when they are off', async () => {
  const guard = await guardFor(await world());
  try {
    await assert.rejects(guard.metrics(), /metrics: true/);
  } finally {
    await guard.close();
  }
});
