/**
 * `GET /v1/admin/events` on a real control plane (mTLS, SQLite): administrators only — no client
 * certificate is refused, and so is a workload's SVID — each call in the audit trail like the admin
 * API's other reads; the dashboard's query (newest first, probes apart, exact filters), guards'
 * decisions unless the control plane's own are asked for; every parameter checked strictly, with a
 * 400 that says what to send instead.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { request } from 'undici';
import {
  controlPlaneAgent,
  controlPlaneSpiffeId,
  createJoinToken,
  joinControlPlane,
  type WorkloadCredentials,
} from '@lockstep/control-plane';
import type { DecisionEvent } from '@lockstep/guard';
import { assembleControlPlane, EVENTS_PATH, type AssembledControlPlane } from '../src/index.ts';

const TD = 'shop.test';
const HELLO = 'spiffe://shop.test/svc/hello';
const CALLER = 'spiffe://shop.test/svc/caller';
const SCANNER = 'spiffe://shop.test/scanner/ci';
const scratch = mkdtempSync(join(tmpdir(), 'lockstep-admin-events-'));
let controlPlane: AssembledControlPlane;
let caller: WorkloadCredentials;

/** A guard's decision, at `second` seconds past a fixed minute (so that the order is known). */
function decision(second: number, overrides: Partial<DecisionEvent> = {}): DecisionEvent {
  return {
    time: `2026-12-07T14:03:${String(second).padStart(2, '0')}.000Z`,
    service: 'hello',
    requestId: `r-${second}`,
    caller: CALLER,
    sub: 'alice',
    txn: `txn-${second}`,
    method: 'GET',
    route: '/hello',
    action: 'hello:read',
    resource: 'hello',
    decision: 'allow',
    policyIds: ['p'],
    policyVersion: 'v1',
    reason: 'LOCKSTEP_ALLOW',
    dryRun: false,
    latencyMs: 0.2,
    traceId: null,
    ...overrides,
  };
}

const SHIPPED = [
  decision(1),
  decision(2, { decision: 'deny', reason: 'LOCKSTEP_ERR_POLICY_DENY', action: 'hello:delete', sub: 'mallory' }),
  decision(3, { dryRun: true, reason: 'LOCKSTEP_ERR_POLICY_DENY', action: 'hello:delete' }),
  decision(4, { dryRun: true }),
  decision(5, { caller: SCANNER, decision: 'deny', reason: 'LOCKSTEP_ERR_POLICY_DENY', probe: SCANNER }),
];

before(async () => {
  controlPlane = await assembleControlPlane({
    trustDomain: TD,
    keyDir: join(scratch, 'keys'),
    store: { sqlite: join(scratch, 'cp.db') },
    checkpointIntervalMs: 3_600_000,
    detection: { sweepMs: 3_600_000 },
    output: { warning: () => {} },
  });
  const { store, ca } = controlPlane;
  const { token } = await createJoinToken(store, ca, { service: 'caller', createdBy: 'test' });
  caller = await joinControlPlane({ url: controlPlane.url, trustDomain: TD, joinToken: token, service: 'caller' });
  // As the collector stores a guard's batch: one source, one stream, in order.
  const entries = SHIPPED.map((event, index) => ({ streamSeq: index + 1, event: JSON.stringify(event) }));
  await store.appendAudit(HELLO, { stream: 'hello-1', dropped: 0, written: entries.length, entries }, Date.now());
});

after(async () => {
  await controlPlane.close();
  rmSync(scratch, { recursive: true, force: true });
});

type Who = 'admin' | 'workload' | 'nobody';

async function get(query: string, who: Who = 'admin'): Promise<{ status: number; body: Record<string, unknown> }> {
  const client =
    who === 'admin'
      ? { cert: controlPlane.admin.chainPem, key: controlPlane.admin.keyPem }
      : who === 'workload'
        ? { cert: caller.chainPem, key: caller.keyPem }
        : {};
  const agent = controlPlaneAgent(TD, { ca: controlPlane.bundlePem, ...client });
  try {
    const response = await request(`${controlPlane.url}${EVENTS_PATH}${query}`, { dispatcher: agent });
    return { status: response.statusCode, body: (await response.body.json()) as Record<string, unknown> };
  } finally {
    await agent.close();
  }
}

async function events(query: string): Promise<DecisionEvent[]> {
  const answer = await get(query);
  assert.equal(answer.status, 200, JSON.stringify(answer.body));
  return answer.body.events as DecisionEvent[];
}

async function adminEvents(): Promise<DecisionEvent[]> {
  await controlPlane.adminTrail.flush();
  const stored = await controlPlane.store.auditEvents(controlPlaneSpiffeId(TD), 0, 100_000);
  return stored.map((entry) => JSON.parse(entry.event) as DecisionEvent);
}

describe('GET /v1/admin/events', () => {
  it("refuses a caller without an administrator's SVID, and records the refusal in the trail", async () => {
    const nobody = await get('', 'nobody');
    assert.deepEqual([nobody.status, nobody.body.error], [401, 'LOCKSTEP_CP_PEER_UNAUTHENTICATED']);
    assert.equal(nobody.body.events, undefined, 'nothing of the trail in a refusal');
    const workload = await get('?service=hello', 'workload');
    assert.deepEqual([workload.status, workload.body.error], [403, 'LOCKSTEP_CP_ADMIN_REQUIRED']);
    // Refused calls are written after the answer, not waited for.
    let refused: DecisionEvent[] = [];
    for (let tries = 0; tries < 50 && refused.length < 2; tries += 1) {
      const reads = (await adminEvents()).filter((event) => event.action === 'admin:events.read');
      refused = reads.filter((event) => event.decision === 'deny');
      if (refused.length < 2) await new Promise((resolve) => setTimeout(resolve, 20));
    }
    assert.deepEqual(
      refused.map((event) => [event.caller, event.reason]).sort(),
      [
        [caller.spiffeId, 'LOCKSTEP_CP_ADMIN_REQUIRED'],
        [null, 'LOCKSTEP_CP_PEER_UNAUTHENTICATED'],
      ].sort(),
    );
  });

  it('answers an administrator with the newest real decisions, probes left out, and records the read', async () => {
    const before = (await adminEvents()).length;
    const listed = await events('?service=hello');
    assert.deepEqual(
      listed.map((event) => event.requestId),
      ['r-4', 'r-3', 'r-2', 'r-1'],
      'newest first, no probe',
    );
    assert.deepEqual(listed.at(-1), SHIPPED[0], 'as stored');
    const reads = (await adminEvents()).slice(before);
    assert.deepEqual(
      reads.map((event) => [event.action, event.decision, event.caller, event.route]),
      [['admin:events.read', 'allow', controlPlane.admin.spiffeId, EVENTS_PATH]],
    );
    // Guards' decisions only: each read is an admin action, and a poller would see nothing but its own reads.
    assert.deepEqual(
      (await events('')).map((event) => event.requestId),
      ['r-4', 'r-3', 'r-2', 'r-1'],
    );
    const own = await events('?service=control-plane');
    assert.ok(own.length > 0 && own.every((event) => event.service === 'control-plane'));
    assert.ok(
      own.some((event) => event.action === 'admin:events.read'),
      'asked for, the admin actions are listed',
    );
  });

  it('filters exactly (dry-run: a denial let through), limits, and lists probes apart', async () => {
    const ids = async (query: string) => (await events(query)).map((event) => event.requestId);
    assert.deepEqual(await ids('?service=hello&decision=deny'), ['r-2']);
    assert.deepEqual(await ids('?service=hello&decision=dry-run'), ['r-3']);
    const allowed = await ids('?service=hello&decision=allow');
    assert.deepEqual(allowed, ['r-4', 'r-1'], 'a dry run the policy allows anyway: an allow');
    assert.deepEqual(await ids('?reason=LOCKSTEP_ERR_POLICY_DENY'), ['r-3', 'r-2']);
    assert.deepEqual(await ids('?sub=mallory'), ['r-2']);
    assert.deepEqual(await ids('?txn=txn-3'), ['r-3']);
    assert.deepEqual(await ids('?service=hello&limit=2'), ['r-4', 'r-3']);
    assert.deepEqual(await ids('?service=hello&sub=nobody'), []);
    assert.deepEqual(await ids('?probes=true'), ['r-5']);
    assert.deepEqual(await ids('?probes=true&decision=allow'), []);
  });

  it('refuses a wrong parameter with a 400 that says what to send', async () => {
    const cases: [string, RegExp][] = [
      ['?decision=maybe', /decision must be one of allow, deny, dry-run; got "maybe"/],
      ['?limit=0', /limit must be a whole number from 1 to 500; got "0"/],
      ['?limit=501', /limit must be a whole number from 1 to 500/],
      ['?limit=2.5', /limit must be a whole number from 1 to 500/],
      ['?probes=yes', /probes must be true or false/],
      ['?colour=blue', /unknown parameter "colour": this takes service, decision, reason, sub, txn, limit and probes/],
      ['?service=a&service=b', /service must be given once/],
      ['?service=', /service is empty/],
    ];
    for (const [query, message] of cases) {
      const answer = await get(query);
      assert.equal(answer.status, 400, query);
      assert.equal(answer.body.error, 'LOCKSTEP_CP_REQUEST_INVALID', query);
      assert.match(String(answer.body.message), message, query);
    }
  });
});
