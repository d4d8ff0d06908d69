/**
 * Scanner probes. A caller with a scanner identity (spiffe://<td>/scanner/<name>) is decided like any
 * other but never reaches a handler: an admitted probe is answered by the guard. It may ask to be
 * authorized as a workload (Lockstep-Probe-As) — only a scanner may; anyone else is decided as
 * itself. Refusals name their code in a header too (a HEAD answer has no body). On every adapter.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { readFileSync } from 'node:fs';
import { policySetFromSources, signBundle } from '@lockstep/policy';
import type { Guard } from '../src/index.ts';
import {
  adapters,
  guardFor,
  POLICY_DIR,
  recordDecisions,
  startOrders,
  TRUST_DOMAIN,
  world,
  type World,
} from './fixture.ts';

const SCANNER = `spiffe://${TRUST_DOMAIN}/scanner/ci`;
const GATEWAY = `spiffe://${TRUST_DOMAIN}/svc/gateway`;
let w: World;
let guard: Guard;
let scannerSvid: { chainPem: string; keyPem: string };

before(async () => {
  w = await world();
  guard = await guardFor(w);
  scannerSvid = await w.ca.issueCert({ uris: [SCANNER] });
});
after(async () => {
  await guard.close();
});

const ORDER = JSON.stringify({ item: 'tea', quantity: 1 });

// Orders are created only for transactions that began at a (hypothetical) frontend: a requester rule.
const REQUESTER_POLICY = `@id("gateway-creates-for-frontend-transactions")
permit (principal == Lockstep::Workload::"${GATEWAY}", action == Lockstep::Action::"orders:create", resource == Lockstep::Service::"orders")
when { context.requester == "spiffe://${TRUST_DOMAIN}/svc/frontend" };`;

for (const adapter of adapters) {
  describe(`scanner probes (${adapter})`, () => {
    it('lets a scanner name the requester the policy sees (Lockstep-Probe-Requester); from a workload the header is ignored', async () => {
      const set = policySetFromSources({
        schema: readFileSync(new URL('shop.cedarschema', `file://${POLICY_DIR}/`), 'utf8'),
        policies: { 'orders.cedar': REQUESTER_POLICY },
      });
      const requesterGuard = await guardFor(w, {
        policy: {
          keys: w.policyKey.jwks,
          bundle: await signBundle(set, {
            privateKey: w.policyKey.privateKey,
            kid: w.policyKey.kid,
            service: 'orders',
          }),
        },
      });
      const service = await startOrders(adapter, requesterGuard);
      const decisions = recordDecisions();
      try {
        const token = await w.customerToken();
        const headers = { 'txn-token': token, 'content-type': 'application/json', 'lockstep-probe-as': GATEWAY };
        const asTokenSays = await w
          .client(scannerSvid)
          .request(`${service.url}/orders`, { method: 'POST', headers, body: ORDER });
        assert.equal(asTokenSays.status, 403, 'the token names the gateway as requester');
        const frontend = `spiffe://${TRUST_DOMAIN}/svc/frontend`;
        const asFrontend = await w
          .client(scannerSvid)
          .request(`${service.url}/orders`, {
            method: 'POST',
            headers: { ...headers, 'lockstep-probe-requester': frontend },
            body: ORDER,
          });
        assert.equal(asFrontend.status, 200);
        assert.equal(asFrontend.headers['lockstep-probe'], 'admitted');
        assert.equal(
          decisions.byRequestId(String(asFrontend.json<{ requestId: string }>().requestId))?.probeRequester,
          frontend,
        );
        const byWorkload = await w
          .client(w.svids.gateway)
          .request(`${service.url}/orders`, {
            method: 'POST',
            headers: { 'txn-token': token, 'content-type': 'application/json', 'lockstep-probe-requester': frontend },
            body: ORDER,
          });
        assert.equal(byWorkload.status, 403, 'a workload cannot choose its requester');
        const invalid = await w
          .client(scannerSvid)
          .request(`${service.url}/orders`, {
            method: 'POST',
            headers: { ...headers, 'lockstep-probe-requester': 'spiffe://other.test/svc/frontend' },
            body: ORDER,
          });
        assert.equal(invalid.headers['lockstep-error'], 'LOCKSTEP_ERR_PROBE_INVALID');
      } finally {
        decisions.stop();
        await service.close();
        await requesterGuard.close();
      }
    });

    it('decides a scanner as itself (permitted nowhere) and, asked to, as a workload — without running the handler', async () => {
      const service = await startOrders(adapter, guard);
      const decisions = recordDecisions();
      const scanner = w.client(scannerSvid);
      try {
        const token = await w.customerToken();
        const json = { 'txn-token': token, 'content-type': 'application/json' };
        const asItself = await scanner.request(`${service.url}/orders`, { method: 'POST', headers: json, body: ORDER });
        assert.equal(asItself.status, 403);
        assert.equal(asItself.headers['lockstep-error'], 'LOCKSTEP_ERR_DENIED');

        const asGateway = await scanner.request(`${service.url}/orders`, {
          method: 'POST',
          headers: { ...json, 'lockstep-probe-as': GATEWAY },
          body: ORDER,
        });
        assert.equal(asGateway.status, 200);
        assert.equal(asGateway.headers['lockstep-probe'], 'admitted');
        const answer = asGateway.json<Record<string, unknown>>();
        assert.equal(answer.probe, 'admitted');
        assert.equal(answer.ok, undefined, 'the handler did not run');
        const event = decisions.byRequestId(String(answer.requestId));
        assert.equal(event?.caller, SCANNER, 'the audit event names the scanner');
        assert.equal(event?.probeAs, GATEWAY);

        const badBody = await scanner.request(`${service.url}/orders`, {
          method: 'POST',
          headers: { ...json, 'lockstep-probe-as': GATEWAY },
          body: JSON.stringify({ item: 'tea', quantity: 'many', extra: 1 }),
        });
        assert.equal(badBody.status, 400, 'the input step runs for a probe');
        assert.equal(badBody.headers['lockstep-error'], 'LOCKSTEP_ERR_INPUT_INVALID');
      } finally {
        decisions.stop();
        await service.close();
      }
    });

    it('takes Lockstep-Probe-As only as one workload of this trust domain', async () => {
      const service = await startOrders(adapter, guard);
      const scanner = w.client(scannerSvid);
      try {
        const token = await w.customerToken();
        for (const probeAs of [
          `spiffe://other.test/svc/gateway`,
          `spiffe://${TRUST_DOMAIN}/scanner/other`,
          `spiffe://${TRUST_DOMAIN.toUpperCase()}/svc/gateway`,
          'gateway',
        ]) {
          const answer = await scanner.request(`${service.url}/orders/1`, {
            headers: { 'txn-token': token, 'lockstep-probe-as': probeAs },
          });
          assert.equal(answer.status, 400, probeAs);
          assert.equal(answer.headers['lockstep-error'], 'LOCKSTEP_ERR_PROBE_INVALID', probeAs);
        }
      } finally {
        await service.close();
      }
    });

    it('ignores Lockstep-Probe-As from a workload: it is decided as itself, and its handler runs', async () => {
      const service = await startOrders(adapter, guard);
      try {
        const token = await w.customerToken();
        const reports = await w
          .client(w.svids.reports)
          .request(`${service.url}/orders/1`, { headers: { 'txn-token': token, 'lockstep-probe-as': GATEWAY } });
        assert.equal(reports.status, 403, 'no impersonation through the header');
        const gateway = await w
          .client(w.svids.gateway)
          .request(`${service.url}/orders/1`, { headers: { 'txn-token': token, 'lockstep-probe-as': GATEWAY } });
        assert.equal(gateway.status, 200);
        assert.equal(gateway.headers['lockstep-probe'], undefined);
        assert.equal(gateway.json<{ ok: boolean }>().ok, true, "a workload's request is handled");
      } finally {
        await service.close();
      }
    });

    it('names the refusal in a header, also for HEAD', async () => {
      const service = await startOrders(adapter, guard);
      try {
        const answer = await w.client(w.svids.reports).request(`${service.url}/orders/1`, { method: 'HEAD' });
        assert.ok(answer.status === 401 || answer.status === 404, String(answer.status));
        assert.match(String(answer.headers['lockstep-error']), /^LOCKSTEP_ERR_(TXN_TOKEN_MISSING|ROUTE_UNKNOWN)$/);
      } finally {
        await service.close();
      }
    });
  });
}
