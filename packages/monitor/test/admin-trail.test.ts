/**
 * Admin actions in the tamper-evident trail, on a running control plane started by the one
 * composition root (`assembleControlPlane`), on SQLite and on PostgreSQL: revocations, a key
 * rotation, a new user, a root rotation and policy changes (applied and refused), each by the
 * administrator over real mTLS, and refused admin calls (a workload's SVID, no certificate) are
 * events of `spiffe://<td>/lockstep/control-plane` with the caller's SPIFFE ID; the trail verifies,
 * raises no guard detection, shows on the dashboard, survives a shutdown with appends pending, and
 * an edited admin event is reported by `verifyTrail` (what `lockstep audit verify` runs).
 */
import assert from 'node:assert/strict';
import { cpSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DatabaseSync } from 'node:sqlite';
import { after, before, describe, it } from 'node:test';
import pg from 'pg';
import { request } from 'undici';
import { createTestBrowser, testPostgres } from '@lockstep/testkit';
import {
  controlPlaneAgent,
  controlPlaneSpiffeId,
  issueAdminCredentials,
  joinControlPlane,
  openSqliteStore,
  openWorkloadCa,
  startControlPlane,
  type AdminCredentials,
  type AdminEvent,
  type AuditEntry,
  type ControlPlaneStore,
  type RunningControlPlane,
  type WorkloadCa,
  type WorkloadCredentials,
} from '@lockstep/control-plane';
import type { DecisionEvent } from '@lockstep/guard';
import {
  assembleControlPlane,
  openStoreAt,
  recordAdminTrail,
  verifyTrail,
  type AssembledControlPlane,
  type StoreLocation,
} from '../src/index.ts';

const TD = 'admin.test';
const SOURCE = controlPlaneSpiffeId(TD);
const ADMIN = `spiffe://${TD}/admin/ops`;
const scratch = mkdtempSync(join(tmpdir(), 'lockstep-admin-trail-'));
const postgres = await testPostgres();
const EXAMPLE_POLICIES = new URL('../../guard/example/policies/', import.meta.url);

after(async () => {
  rmSync(scratch, { recursive: true, force: true });
  await postgres.cleanup();
});

interface Backend {
  readonly name: string;
  readonly skip: string | false;
  location(dir: string): StoreLocation;
  /** SQL as an attacker with database access runs it, append-only trigger off (positional `?`). */
  sql(dir: string, statement: string, ...values: string[]): Promise<void>;
  /** A real outage of the trail: the database refuses every new audit event (a trigger), or takes them again. */
  outage(dir: string, on: boolean): Promise<void>;
}

const OUTAGE = 'the audit disk is full (test outage)';

const PG_SCHEMA = postgres.schema();
const BACKENDS: Backend[] = [
  {
    name: 'sqlite',
    skip: false,
    location: (dir) => ({ sqlite: join(dir, 'cp.db') }),
    async sql(dir, statement, ...values) {
      const db = new DatabaseSync(join(dir, 'cp.db'));
      try {
        db.exec('DROP TRIGGER IF EXISTS audit_events_no_update');
        db.prepare(statement).run(...values);
      } finally {
        db.close();
      }
    },
    async outage(dir, on) {
      const db = new DatabaseSync(join(dir, 'cp.db'));
      try {
        db.exec(
          on
            ? `CREATE TRIGGER audit_outage BEFORE INSERT ON audit_events BEGIN SELECT RAISE(ABORT, '${OUTAGE}'); END`
            : 'DROP TRIGGER audit_outage',
        );
      } finally {
        db.close();
      }
    },
  },
  {
    name: 'postgres',
    skip: postgres.skip,
    location: () => ({ postgres: postgres.url, schema: PG_SCHEMA }),
    async sql(_dir, statement, ...values) {
      const client = new pg.Client({ connectionString: postgres.url, options: `-c search_path=${PG_SCHEMA}` });
      await client.connect();
      try {
        await client.query('ALTER TABLE audit_events DISABLE TRIGGER ALL');
        let index = 0;
        await client.query(
          statement.replace(/\?/g, () => `$${++index}`),
          values,
        );
      } finally {
        await client.end();
      }
    },
    async outage(_dir, on) {
      const client = new pg.Client({ connectionString: postgres.url, options: `-c search_path=${PG_SCHEMA}` });
      await client.connect();
      try {
        await client.query(
          on
            ? `CREATE FUNCTION audit_outage() RETURNS trigger LANGUAGE plpgsql AS $$
               BEGIN RAISE EXCEPTION '${OUTAGE}'; END $$;
             CREATE TRIGGER audit_outage BEFORE INSERT ON audit_events FOR EACH ROW EXECUTE FUNCTION audit_outage()`
            : 'DROP TRIGGER audit_outage ON audit_events; DROP FUNCTION audit_outage()',
        );
      } finally {
        await client.end();
      }
    },
  },
];

type Identity = { readonly chainPem: string; readonly keyPem: string };
const parsed = (entries: readonly AuditEntry[]) => entries.map((entry) => JSON.parse(entry.event) as DecisionEvent);
const pause = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
const REPORTS_POLICY = `@id("gateway-reads-reports")
permit (principal == Lockstep::Workload::"spiffe://${TD}/svc/gateway", action == Lockstep::Action::"orders:read",
        resource == Lockstep::Service::"reports");
`;

for (const backend of BACKENDS) {
  describe(`admin actions in the trail (${backend.name})`, { skip: backend.skip }, () => {
    const dir = join(scratch, backend.name);
    const policyDir = join(dir, 'policies');
    const lines: string[] = [];
    let controlPlane: AssembledControlPlane;
    let orders: WorkloadCredentials;

    before(async () => {
      cpSync(EXAMPLE_POLICIES, policyDir, { recursive: true });
      controlPlane = await assembleControlPlane({
        trustDomain: TD,
        keyDir: join(dir, 'keys'),
        store: backend.location(dir),
        policyDir,
        adminName: 'ops',
        checkpointIntervalMs: 3_600_000,
        detection: { sweepMs: 3_600_000, verifyEveryMs: 0 },
        output: { line: (text) => lines.push(text), warning: () => {}, error: (text) => lines.push(text) },
      });
    });
    after(async () => {
      await controlPlane.close();
    });

    /** An admin API call over mTLS, as the administrator by default (null: no client certificate). */
    async function call(path: string, body?: unknown, as: Identity | null = controlPlane.admin) {
      const tls = as === null ? {} : { cert: as.chainPem, key: as.keyPem };
      const agent = controlPlaneAgent(TD, { ca: controlPlane.bundlePem, ...tls });
      try {
        const json =
          body === undefined ? {} : { headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) };
        const response = await request(`${controlPlane.url}${path}`, { method: 'POST', dispatcher: agent, ...json });
        return { status: response.statusCode, body: (await response.body.json()) as Record<string, unknown> };
      } finally {
        await agent.close();
      }
    }

    async function adminEvents(store = controlPlane.store): Promise<DecisionEvent[]> {
      return parsed(await store.auditEvents(SOURCE, 0, 10_000));
    }

    /** Waits until the control plane's source holds `count` events that `match` (appends run after the answer). */
    type Match = (event: DecisionEvent) => boolean;
    async function eventsWhere(match: Match, what: string, count = 1): Promise<DecisionEvent[]> {
      for (const started = Date.now(); Date.now() - started < 10_000; await pause(50)) {
        const found = (await adminEvents()).filter(match);
        if (found.length >= count) return found;
      }
      const held = (await adminEvents()).map((event) => event.action).join(', ');
      return assert.fail(`not ${count} ${what} in the trail within 10 s; it holds: ${held}`);
    }
    const eventWhere = async (match: Match, what: string) => (await eventsWhere(match, what))[0] as DecisionEvent;

    it("records the policy in force at start as the first event of the control plane's source", async () => {
      await controlPlane.adminTrail.flush();
      const [first] = await adminEvents();
      assert.deepEqual(
        [first?.service, first?.action, first?.method, first?.caller, first?.decision, first?.resource],
        ['control-plane', 'admin:policy.apply', 'START', null, 'allow', controlPlane.policy?.version],
      );
    });

    it("appends every admin action with the administrator's SPIFFE ID, in the order they were taken", async () => {
      const token = await call('/v1/admin/join-tokens', { service: 'orders' });
      assert.equal(token.status, 200);
      const joinToken = String(token.body.token);
      orders = await joinControlPlane({ url: controlPlane.url, trustDomain: TD, joinToken, service: 'orders' });
      const steps: [string, unknown, number][] = [
        ['/v1/admin/revocations', { kind: 'sub', value: 'mallory', reason: 'account takeover' }, 200],
        ['/v1/admin/revocations', { kind: 'txn', value: 'txn-0042', reason: 'replayed' }, 200],
        ['/v1/admin/revocations', { kind: 'spiffeId', value: `spiffe://${TD}/svc/legacy`, reason: 'retired' }, 200],
        ['/v1/admin/keys/rotate', { key: 'txn-token' }, 200],
        ['/v1/admin/users', { username: 'erin', roles: ['customer'] }, 201],
        ['/v1/admin/ca/prepare', undefined, 200],
        ['/v1/admin/ca/activate', undefined, 200],
      ];
      for (const [path, body, status] of steps) assert.equal((await call(path, body)).status, status, path);
      await eventWhere((event) => event.action === 'admin:root.activate', 'root activation');

      const admin = (await adminEvents()).filter((event) => event.method !== 'START');
      const allowed = (action: string, resource: string) => [action, resource, 'allow', 'LOCKSTEP_ALLOW', ADMIN];
      const recorded = admin.map((event) => [event.action, event.resource, event.decision, event.reason, event.caller]);
      assert.deepEqual(recorded, [
        allowed('admin:join-token.create', 'orders'),
        allowed('admin:revoke', 'mallory'),
        allowed('admin:revoke', 'txn-0042'),
        allowed('admin:revoke', `spiffe://${TD}/svc/legacy`),
        allowed('admin:key.rotate', 'txn-token'),
        allowed('admin:user.create', 'erin'),
        allowed('admin:root.prepare', 'control-plane'),
        allowed('admin:root.activate', 'control-plane'),
      ]);
      const stored = await controlPlane.store.auditEvents(SOURCE, 0, 10_000);
      assert.deepEqual(
        stored.map((event) => event.seq),
        stored.map((_, index) => index + 1),
        'one chain: 1, 2, 3 …',
      );
      assert.ok(!stored.some((event) => event.event.includes(joinToken)), 'no secret reaches the trail');
    });

    it('keeps each step of a revocation lifted and made again (kind, reason, administrator): the store keeps the last', async () => {
      const steps: [string, string][] = [
        ['/v1/admin/revocations', 'suspected takeover'],
        ['/v1/admin/revocations/lift', 'the takeover was a false alarm'],
        ['/v1/admin/revocations', 'confirmed after all'],
      ];
      for (const [path, reason] of steps) {
        assert.equal((await call(path, { kind: 'sub', value: 'frank', reason })).status, 200, path);
      }
      // The store holds the latest state only: revoking again dropped (SQLite) or overwrote (PostgreSQL) the lift.
      const [entry] = (await controlPlane.store.revocationsSince(0)).filter(({ value }) => value === 'frank');
      assert.deepEqual([entry?.reason, entry?.lifted], ['confirmed after all', null]);

      const trail = await eventsWhere((event) => event.resource === 'frank', 'steps for frank', 3);
      const recorded = trail.map((event) => [event.action, event.caller, event.decision, (event as AdminEvent).detail]);
      assert.deepEqual(recorded, [
        ['admin:revoke', ADMIN, 'allow', { kind: 'sub', reason: 'suspected takeover' }],
        ['admin:revoke.lift', ADMIN, 'allow', { kind: 'sub', reason: 'the takeover was a false alarm' }],
        ['admin:revoke', ADMIN, 'allow', { kind: 'sub', reason: 'confirmed after all' }],
      ]);
    });

    it('appends every policy change, applied and refused', async () => {
      writeFileSync(join(policyDir, 'reports.cedar'), REPORTS_POLICY);
      const watched =
        (decision: string): Match =>
        (event) =>
          event.method === 'WATCH' && event.decision === decision;
      const applied = await eventWhere(watched('allow'), 'applied change');
      assert.deepEqual(
        [applied.action, applied.resource, applied.caller, applied.reason],
        ['admin:policy.apply', controlPlane.policy?.version, null, 'LOCKSTEP_ALLOW'],
      );
      writeFileSync(join(policyDir, 'broken.cedar'), 'permit (principal, action, resource) when { context.nope };\n');
      const refused = await eventWhere(watched('deny'), 'refused change');
      assert.deepEqual(
        [refused.action, refused.resource, refused.reason],
        ['admin:policy.apply', applied.resource, 'LOCKSTEP_POLICY_REFUSED'],
        'refused, keeping the applied version',
      );
      assert.ok(
        lines.some((line) => /^policy change REFUSED, keeping [0-9a-f]{64}/.test(line)),
        'and said loudly',
      );
      rmSync(join(policyDir, 'broken.cedar'));
    });

    it("appends refused admin calls with the caller's SPIFFE ID (a workload) or none (no certificate)", async () => {
      const asWorkload = await call('/v1/admin/revocations', { kind: 'sub', value: 'alice', reason: 'x' }, orders);
      assert.deepEqual([asWorkload.status, asWorkload.body.error], [403, 'LOCKSTEP_CP_ADMIN_REQUIRED']);
      assert.equal((await call('/v1/admin/keys/rotate', { key: 'txn-token' }, null)).status, 401);
      const byWorkload = await eventWhere((event) => event.caller === orders.spiffeId, 'refused workload call');
      assert.deepEqual(
        [byWorkload.action, byWorkload.decision, byWorkload.reason],
        ['admin:revoke', 'deny', 'LOCKSTEP_CP_ADMIN_REQUIRED'],
      );
      const anonymous = (event: DecisionEvent) => event.caller === null && event.action === 'admin:key.rotate';
      const byNobody = await eventWhere(anonymous, 'anonymous call');
      assert.deepEqual([byNobody.decision, byNobody.reason], ['deny', 'LOCKSTEP_CP_PEER_UNAUTHENTICATED']);
    });

    it("verifies like any guard's trail, and the checkpointer covers the source", async () => {
      await controlPlane.adminTrail.flush();
      await controlPlane.checkpointer.checkpoint();
      const report = await verifyTrail(controlPlane.store, controlPlane.auditKeys.publicJwks());
      assert.deepEqual(report.problems, []);
      const own = report.sources.find((source) => source.source === SOURCE);
      assert.equal(own?.events, (await adminEvents()).length);
      assert.equal(own?.checkpointed, own?.events, 'the newest link signed every admin event');
    });

    it('raises no guard detection: 25 refused admin calls by a workload are no denial burst, no new edge', async () => {
      for (let index = 0; index < 25; index += 1) {
        assert.equal((await call('/v1/admin/join-tokens', { service: 'payments' }, orders)).status, 403);
      }
      const refusedJoinToken = (event: DecisionEvent) =>
        event.caller === orders.spiffeId && event.action === 'admin:join-token.create';
      await eventsWhere(refusedJoinToken, 'refused calls', 25);
      await controlPlane.detector.sweep();
      assert.deepEqual(
        (await controlPlane.store.alerts(100)).map((alert) => `${alert.rule} ${alert.subject}`),
        [],
      );
    });

    it("shows the admin events on the dashboard's events view", async () => {
      const root = { username: 'root', password: 'the operators passphrase' };
      assert.equal((await call('/v1/admin/users', { ...root, roles: ['admin'] })).status, 201);
      const browser = createTestBrowser({ ca: controlPlane.bundlePem });
      try {
        assert.equal((await browser.submit(await browser.open(`${controlPlane.url}/dashboard`), root)).status, 200);
        const query = 'service=control-plane&decision=allow';
        const answer = await browser.request(`${controlPlane.url}/dashboard/api/events?${query}`);
        const events = (answer.body as { events: DecisionEvent[] }).events;
        const revocation = events.find((event) => event.action === 'admin:revoke' && event.resource === 'mallory');
        assert.equal(revocation?.caller, ADMIN, 'the revocation, by the administrator');
        assert.ok(events.every((event) => event.service === 'control-plane' && event.decision === 'allow'));
      } finally {
        await browser.close();
      }
    });

    it("stores an admin call's event before its answer leaves: read at once, no waiting", async () => {
      const steps: [string, unknown, number, string, string][] = [
        ['/v1/admin/revocations', { kind: 'sub', value: 'at-once', reason: 'stolen' }, 200, 'admin:revoke', 'at-once'],
        ['/v1/admin/keys/rotate', { key: 'txn-token' }, 200, 'admin:key.rotate', 'txn-token'],
        ['/v1/admin/users', { username: 'frank', roles: ['customer'] }, 201, 'admin:user.create', 'frank'],
        ['/v1/admin/join-tokens', { service: 'reports' }, 200, 'admin:join-token.create', 'reports'],
      ];
      for (const [path, body, status, action, resource] of steps) {
        const held = (await adminEvents()).length;
        assert.equal((await call(path, body)).status, status, path);
        const stored = (await adminEvents())
          .slice(held)
          .filter((event) => event.action === action && event.resource === resource);
        const recorded = stored.map((event) => [event.decision, event.caller]);
        assert.deepEqual(recorded, [['allow', ADMIN]], `${action} at once`);
      }
      // A call that fails after it was authorised: its authorisation, then its failure, one request id.
      const unknownKey = await call('/v1/admin/keys/rotate', { key: 'no-such-key' });
      assert.deepEqual([unknownKey.status, unknownKey.body.error], [400, 'LOCKSTEP_CP_REQUEST_INVALID']);
      const pair = (await adminEvents()).filter((event) => event.resource === 'no-such-key');
      assert.deepEqual(
        pair.map((event) => [event.decision, event.reason]),
        [
          ['allow', 'LOCKSTEP_ALLOW'],
          ['deny', 'LOCKSTEP_CP_REQUEST_INVALID'],
        ],
      );
      assert.equal(pair[0]?.requestId, pair[1]?.requestId);
    });

    it('refuses an admin call the trail cannot record, before it runs: 503, nothing applied, said loudly', async () => {
      await backend.outage(dir, true);
      try {
        const revoked = await call('/v1/admin/revocations', { kind: 'sub', value: 'unrecorded', reason: 'outage' });
        assert.deepEqual([revoked.status, revoked.body.error], [503, 'LOCKSTEP_CP_AUDIT_UNAVAILABLE']);
        const notDone = /nothing was done \(the audit trail could not store it: .*test outage/;
        assert.match(String(revoked.body.message), notDone);
        assert.equal(await controlPlane.store.isRevoked('sub', 'unrecorded'), false, 'the revocation was not applied');
        const user = await call('/v1/admin/users', { username: 'grace', roles: ['admin'] });
        assert.deepEqual([user.status, user.body.error], [503, 'LOCKSTEP_CP_AUDIT_UNAVAILABLE']);
        assert.equal(await controlPlane.store.user('grace'), null, 'the user was not created');
        assert.ok(lines.some((line) => /^the audit trail could not take \d+ admin events? \(.*test outage/.test(line)));
      } finally {
        await backend.outage(dir, false);
      }
      // Once the store takes events again, the refused calls reach the trail, in order, ahead of the next one.
      assert.equal((await call('/v1/admin/revocations', { kind: 'sub', value: 'mended', reason: 'x' })).status, 200);
      const resources = ['unrecorded', 'grace', 'mended'];
      const events = (await adminEvents()).filter((event) => resources.includes(event.resource));
      assert.deepEqual(
        events.map((event) => [event.resource, event.decision, event.reason]),
        [
          ['unrecorded', 'allow', 'LOCKSTEP_ALLOW'],
          ['unrecorded', 'deny', 'LOCKSTEP_CP_AUDIT_UNAVAILABLE'],
          ['grace', 'allow', 'LOCKSTEP_ALLOW'],
          ['grace', 'deny', 'LOCKSTEP_CP_AUDIT_UNAVAILABLE'],
          ['mended', 'allow', 'LOCKSTEP_ALLOW'],
        ],
      );
    });

    it("a flood of refused anonymous calls neither delays nor pushes out an administrator's event", async () => {
      const flood = await anonymousFlood(controlPlane.url, controlPlane.bundlePem, 120, async () => {
        const revoked = await call('/v1/admin/revocations', { kind: 'sub', value: 'amid-flood', reason: 'flood' });
        assert.equal(revoked.status, 200);
        const stored = (await adminEvents()).filter((event) => event.resource === 'amid-flood');
        assert.deepEqual(
          stored.map((event) => [event.decision, event.caller]),
          [['allow', ADMIN]],
          'stored at once',
        );
      });
      assert.deepEqual(flood.statuses, Array(120).fill(401));
      await controlPlane.adminTrail.flush();
      const written = (await adminEvents()).filter(
        (event) => event.caller === null && event.time >= flood.startedAt && event.method !== 'SUMMARY',
      );
      // At most 30 per source and minute one by one (twice that if a minute ended during the flood; an earlier
      // test's anonymous call counts too); the rest are counted in a summary at the minute's end.
      assert.ok(written.length > 0 && written.length <= 60, `${written.length} refused calls written one by one`);
    });

    it('writes the admin events still queued at shutdown before the store closes, with a last checkpoint', async () => {
      const revoke = (value: string) => call('/v1/admin/revocations', { kind: 'sub', value, reason: 'shutdown test' });
      const burst = Array.from({ length: 20 }, (_, index) => revoke(`burst-${index}`));
      assert.deepEqual(
        (await Promise.all(burst)).map((answer) => answer.status),
        Array(20).fill(200),
      );
      await controlPlane.close();
      const store = await openStoreAt(backend.location(dir));
      try {
        const events = await adminEvents(store);
        const inTrail = events.filter((event) => event.resource.startsWith('burst-'));
        assert.equal(inTrail.length, 20, 'the whole burst is in the trail');
        const report = await verifyTrail(store, controlPlane.auditKeys.publicJwks());
        assert.deepEqual(report.problems, []);
        assert.equal(report.chain.newest?.kind, 'stop', 'the last link is the one signed at shutdown');
        assert.equal(
          report.sources.find((source) => source.source === SOURCE)?.checkpointed,
          events.length,
          'and it covers them',
        );
      } finally {
        await store.close();
      }
    });

    it('reports an admin event edited in the database (append-only trigger dropped first)', async () => {
      let store = await openStoreAt(backend.location(dir));
      const events = await store.auditEvents(SOURCE, 0, 10_000);
      await store.close();
      const revocation = events.find((event) => event.event.includes('"resource":"mallory"'));
      assert.ok(revocation !== undefined);
      // The attacker hides who was revoked.
      const hide = `UPDATE audit_events SET event = replace(event, '"mallory"', '"nobody"')
                    WHERE source = ? AND seq = ?`;
      await backend.sql(dir, hide, SOURCE, String(revocation.seq));
      store = await openStoreAt(backend.location(dir));
      try {
        const report = await verifyTrail(store, controlPlane.auditKeys.publicJwks());
        assert.equal(report.ok, false);
        const edited = report.problems.find((problem) => problem.kind === 'modified' && problem.seq === revocation.seq);
        assert.equal(edited?.source, SOURCE, JSON.stringify(report.problems));
      } finally {
        await store.close();
      }
    });
  });
}

describe('the admin trail queue', () => {
  const event = (index: number): DecisionEvent => ({
    time: new Date().toISOString(),
    service: 'control-plane',
    requestId: `r-${index}`,
    caller: ADMIN,
    sub: null,
    txn: null,
    method: 'POST',
    route: '/v1/admin/revocations',
    action: 'admin:revoke',
    resource: `user-${index}`,
    decision: 'allow',
    policyIds: [],
    policyVersion: null,
    reason: 'LOCKSTEP_ALLOW',
    dryRun: false,
    latencyMs: 1,
    traceId: null,
  });

  /** A real SQLite store whose appends fail while `failing` is set: the store being down. */
  function flakyStore(path: string) {
    const store = openSqliteStore(path);
    const state = { failing: true, attempts: 0 };
    const appendAudit = (...args: Parameters<ControlPlaneStore['appendAudit']>) => {
      state.attempts += 1;
      return state.failing ? Promise.reject(new Error('database is locked')) : store.appendAudit(...args);
    };
    const flaky = Object.create(store, { appendAudit: { value: appendAudit } }) as ControlPlaneStore;
    return { store, flaky, state };
  }

  it('keeps failed appends queued, says so loudly, and stores them in order once the store answers', async () => {
    const { store, flaky, state } = flakyStore(join(scratch, 'flaky.db'));
    const errors: string[] = [];
    const trail = recordAdminTrail({ store: flaky, trustDomain: TD, onError: (message) => errors.push(message) });
    try {
      for (let index = 1; index <= 3; index += 1) trail.record(event(index));
      for (let waited = 0; state.attempts < 2 && waited < 5_000; waited += 50) await pause(50);
      assert.ok(state.attempts >= 2, 'retried');
      assert.match(errors[0] ?? '', /could not take 3 admin events \(database is locked\); they stay queued, next try/);
      assert.equal((await store.auditEvents(SOURCE, 0, 100)).length, 0);
      trail.record(event(4));
      state.failing = false;
      await trail.flush();
      const stored = parsed(await store.auditEvents(SOURCE, 0, 100));
      assert.deepEqual(
        stored.map((entry) => entry.resource),
        ['user-1', 'user-2', 'user-3', 'user-4'],
      );
      assert.deepEqual(
        (await store.auditStreams()).map((stream) => [stream.gaps, stream.dropped]),
        [[0, 0]],
      );
    } finally {
      await trail.close();
      await store.close();
    }
  });

  const refusal = (index: number, caller: string | null = null): DecisionEvent => ({
    ...event(index),
    caller,
    decision: 'deny',
    resource: 'control-plane',
    reason: caller === null ? 'LOCKSTEP_CP_PEER_UNAUTHENTICATED' : 'LOCKSTEP_CP_ADMIN_REQUIRED',
  });

  it("drops only refused calls' events from a full queue (counted, loudly), never an administrator's", async () => {
    const { store, flaky, state } = flakyStore(join(scratch, 'down.db'));
    const errors: string[] = [];
    const onError = (message: string) => errors.push(message);
    const trail = recordAdminTrail({ store: flaky, trustDomain: TD, onError, maxQueued: 2 });
    for (let index = 1; index <= 3; index += 1) trail.refused(refusal(index), `address 192.0.2.${index}`);
    const dropped = errors.find((message) => message.includes('DROPPED')) ?? '';
    assert.match(dropped, /refused-call admin event DROPPED \(admin:revoke by nobody\): 2 events wait/);
    // The queue is full, yet an administrator's event joins it; the store being down, the call hears so at once.
    await assert.rejects(trail.write(event(4)), /the audit trail could not store it: database is locked/);
    await trail.close();
    assert.match(errors.at(-1) ?? '', /^3 admin events never reached the audit trail/);
    // Once the store answers, a drop travels with the next batch, and `audit verify` reports it.
    state.failing = false;
    const again = recordAdminTrail({ store: flaky, trustDomain: TD, onError, maxQueued: 1 });
    again.refused(refusal(5), 'address 192.0.2.5');
    again.refused(refusal(6), 'address 192.0.2.6');
    await again.flush();
    again.refused(refusal(7), 'address 192.0.2.7');
    await again.close();
    assert.deepEqual(
      (await store.auditStreams()).map((stream) => stream.dropped),
      [1],
    );
    const report = await verifyTrail(store, { keys: [] });
    assert.ok(report.problems.some((problem) => problem.kind === 'missing' && /dropped 1 event/.test(problem.detail)));
    await store.close();
  });

  it("writes a source's first refused calls of a window one by one, and one summary of the rest", async () => {
    const store = openSqliteStore(join(scratch, 'limits.db'));
    const trail = recordAdminTrail({ store, trustDomain: TD, refusals: { perSource: 2, sources: 2, windowMs: 300 } });
    const workload = `spiffe://${TD}/svc/orders`;
    try {
      for (let index = 1; index <= 5; index += 1) trail.refused(refusal(index), 'address 192.0.2.1');
      for (let index = 6; index <= 8; index += 1) trail.refused(refusal(index, workload), workload);
      for (let index = 9; index <= 10; index += 1) trail.refused(refusal(index), `address 192.0.2.${index}`);
      let events: DecisionEvent[] = [];
      for (let waited = 0; waited < 5_000; waited += 50) {
        events = parsed(await store.auditEvents(SOURCE, 0, 100));
        if (events.some((entry) => entry.method === 'SUMMARY')) break;
        await pause(50);
      }
      await trail.flush();
      events = parsed(await store.auditEvents(SOURCE, 0, 100));
      assert.deepEqual(
        events.filter((entry) => entry.method !== 'SUMMARY').map((entry) => entry.requestId),
        ['r-1', 'r-2', 'r-6', 'r-7'],
        'two of each source one by one; none of the sources beyond two',
      );
      assert.deepEqual(
        events
          .filter((entry) => entry.method === 'SUMMARY')
          .map((entry) => [entry.action, entry.caller, entry.decision, entry.reason, entry.resource]),
        [
          [
            'admin:refused.summary',
            null,
            'deny',
            'LOCKSTEP_CP_PEER_UNAUTHENTICATED',
            '3 refused calls from address 192.0.2.1 beyond the first 2 within 0.3 s',
          ],
          [
            'admin:refused.summary',
            workload,
            'deny',
            'LOCKSTEP_CP_ADMIN_REQUIRED',
            `1 refused call from ${workload} beyond the first 2 within 0.3 s`,
          ],
          [
            'admin:refused.summary',
            null,
            'deny',
            'LOCKSTEP_CP_PEER_UNAUTHENTICATED',
            '2 refused calls from sources beyond the first 2 within 0.3 s',
          ],
        ],
      );
      // A new window: the source's calls are written one by one again.
      trail.refused(refusal(11), 'address 192.0.2.1');
      await trail.flush();
      assert.equal(parsed(await store.auditEvents(SOURCE, 0, 100)).at(-1)?.requestId, 'r-11');
    } finally {
      await trail.close();
      await store.close();
    }
  });
});

/**
 * `count` admin calls without a client certificate, all at once; `during` runs once a quarter of them
 * were answered, while the rest are still coming.
 */
async function anonymousFlood(url: string, bundlePem: string, count: number, during: () => Promise<void>) {
  const startedAt = new Date().toISOString();
  const agent = controlPlaneAgent(TD, { ca: bundlePem });
  let answered = 0;
  let quarter = () => {};
  const quarterAnswered = new Promise<void>((resolve) => {
    quarter = resolve;
  });
  const body = JSON.stringify({ kind: 'sub', value: 'everyone', reason: 'flood' });
  const calls = Array.from({ length: count }, async () => {
    const response = await request(`${url}/v1/admin/revocations`, {
      method: 'POST',
      dispatcher: agent,
      headers: { 'content-type': 'application/json' },
      body,
    });
    await response.body.dump();
    if ((answered += 1) === Math.ceil(count / 4)) quarter();
    return response.statusCode;
  });
  const statuses = Promise.all(calls);
  try {
    await quarterAnswered;
    await during();
    return { statuses: await statuses, startedAt };
  } finally {
    await statuses.catch(() => {});
    await agent.close();
  }
}

/**
 * The same guarantees against stores that misbehave in ways a real database does (slow, or failing
 * from some append on): a real SQLite store, whose `appendAudit` is delayed or refused first, under
 * a control plane wired by hand so that the trail can be given that store.
 */
describe("an administrator's call waits for the trail (real SQLite, slow or failing appends)", () => {
  const wiredTd = TD;
  let ca: WorkloadCa;
  let store: ControlPlaneStore;
  let server: RunningControlPlane;
  let admin: AdminCredentials;

  before(async () => {
    ca = await openWorkloadCa({ trustDomain: wiredTd, keyDir: join(scratch, 'wired-ca') });
    store = openSqliteStore(join(scratch, 'wired.db'));
    server = await startControlPlane({ ca, store });
    admin = await issueAdminCredentials(ca, 'ops');
  });
  after(async () => {
    await server.close();
    await store.close();
  });

  /** `store`, its appends first passed through `before` (which may wait, or throw: the store failing). */
  function appendsThrough(before: (attempt: number) => Promise<unknown>): ControlPlaneStore {
    let attempts = 0;
    const appendAudit = async (...args: Parameters<ControlPlaneStore['appendAudit']>) => {
      await before((attempts += 1));
      return store.appendAudit(...args);
    };
    return Object.create(store, { appendAudit: { value: appendAudit } }) as ControlPlaneStore;
  }

  async function call(path: string, body: unknown) {
    const agent = controlPlaneAgent(wiredTd, { ca: ca.bundlePem, cert: admin.chainPem, key: admin.keyPem });
    try {
      const response = await request(`${server.url}${path}`, {
        method: 'POST',
        dispatcher: agent,
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify(body),
      });
      return { status: response.statusCode, body: (await response.body.json()) as Record<string, unknown> };
    } finally {
      await agent.close();
    }
  }

  const stored = async (resource: string) =>
    parsed(await store.auditEvents(SOURCE, 0, 10_000)).filter((event) => event.resource === resource);

  it('holds the answer until the event is stored (appends take 150 ms)', async () => {
    const trail = recordAdminTrail({ store: appendsThrough(() => pause(150)), trustDomain: wiredTd });
    try {
      const revoked = await call('/v1/admin/revocations', { kind: 'sub', value: 'slow-store', reason: 'x' });
      assert.equal(revoked.status, 200);
      const events = await stored('slow-store');
      assert.deepEqual(
        events.map((event) => [event.action, event.decision, event.caller]),
        [['admin:revoke', 'allow', `spiffe://${wiredTd}/admin/ops`]],
        'in the trail when the answer arrives',
      );
    } finally {
      await trail.close();
    }
  });

  it('a call the store is too slow (writeTimeoutMs) to record: 503, not applied; recorded later', async () => {
    const errors: string[] = [];
    const trail = recordAdminTrail({
      store: appendsThrough(() => pause(600)),
      trustDomain: wiredTd,
      writeTimeoutMs: 200,
      onError: (message) => errors.push(message),
    });
    try {
      const revoked = await call('/v1/admin/revocations', { kind: 'sub', value: 'too-slow', reason: 'x' });
      assert.deepEqual([revoked.status, revoked.body.error], [503, 'LOCKSTEP_CP_AUDIT_UNAVAILABLE']);
      const notDone = /nothing was done \(the audit trail did not store the event within 0\.2 s/;
      assert.match(String(revoked.body.message), notDone);
      assert.equal(await store.isRevoked('sub', 'too-slow'), false, 'not applied');
      await trail.flush();
      const events = await stored('too-slow');
      assert.deepEqual(
        events.map((event) => [event.decision, event.reason]),
        [
          ['allow', 'LOCKSTEP_ALLOW'],
          ['deny', 'LOCKSTEP_CP_AUDIT_UNAVAILABLE'],
        ],
        'the trail says it was refused',
      );
      assert.equal(events[0]?.requestId, events[1]?.requestId);
      assert.deepEqual(errors, []);
    } finally {
      await trail.close();
    }
  });

  it("answers 503 when a failed call's failure cannot be recorded (appends fail from the second on)", async () => {
    const failing = appendsThrough(async (attempt) => {
      if (attempt > 1) throw new Error('disk I/O error');
    });
    const trail = recordAdminTrail({ store: failing, trustDomain: wiredTd, onError: () => {} });
    try {
      const rotated = await call('/v1/admin/keys/rotate', { key: 'no-such-key' });
      assert.deepEqual([rotated.status, rotated.body.error], [503, 'LOCKSTEP_CP_AUDIT_UNAVAILABLE']);
      assert.match(
        String(rotated.body.message),
        /the call failed \(LOCKSTEP_CP_REQUEST_INVALID\) and that failure could not be recorded \(.*disk I\/O error\)/,
      );
      assert.deepEqual(
        (await stored('no-such-key')).map((event) => event.decision),
        ['allow'],
        'its authorisation',
      );
    } finally {
      await trail.close();
    }
  });

  it("a flood of refused anonymous calls does not drop an administrator's event (slow store)", async () => {
    const trail = recordAdminTrail({
      store: appendsThrough(() => pause(100)),
      trustDomain: wiredTd,
      maxQueued: 5,
      refusals: { perSource: 3 },
      onError: () => {},
    });
    try {
      const flood = await anonymousFlood(server.url, ca.bundlePem, 60, async () => {
        const revoked = await call('/v1/admin/revocations', { kind: 'sub', value: 'amid-the-flood', reason: 'x' });
        assert.equal(revoked.status, 200);
        assert.deepEqual(
          (await stored('amid-the-flood')).map((event) => event.decision),
          ['allow'],
          'at once',
        );
      });
      assert.deepEqual(flood.statuses, Array(60).fill(401));
      await trail.close();
      const refused = parsed(await store.auditEvents(SOURCE, 0, 10_000)).filter(
        (event) => event.caller === null && event.time >= flood.startedAt,
      );
      assert.deepEqual(
        refused.map((event) => (event.method === 'SUMMARY' ? event.resource : event.reason)),
        [
          ...Array(3).fill('LOCKSTEP_CP_PEER_UNAUTHENTICATED'),
          '57 refused calls from address 127.0.0.1 beyond the first 3 within 60 s',
        ],
      );
      assert.equal(
        (await store.auditStreams()).reduce((sum, stream) => sum + stream.dropped, 0),
        0,
        'nothing dropped',
      );
    } finally {
      await trail.close();
    }
  });
});
