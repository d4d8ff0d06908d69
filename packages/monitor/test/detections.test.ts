/**
 * Every detection rule, triggered by real traffic through real guards (or, for sign-in, the real
 * identity provider), shipped to the real collector over mTLS. Each test asserts the alert that the
 * rule raises — and, for the webhook, that it is delivered signed and retried.
 */
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync, cpSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { DatabaseSync } from 'node:sqlite';
import pg from 'pg';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';
import { after, before, describe, it } from 'node:test';
import Fastify, { type FastifyInstance } from 'fastify';
import { Agent, request } from 'undici';
import { x509 } from '../../control-plane/src/lib/x509.ts';
import { createGuard, type Guard } from '@lockstep/guard';
import { lockstep } from '@lockstep/guard/fastify';
import {
  createTestBrowser,
  createTestCa,
  createTxnTokenMinter,
  issueCertificate,
  startTcpRelay,
  testPostgres,
  type TxnTokenMinter,
} from '@lockstep/testkit';
import {
  createJoinToken,
  createUser,
  issueSvidFromCsr,
  joinAsWorkload,
  joinControlPlane,
  startRegistryHeartbeat,
  type AlertRecord,
  type ControlPlaneStore,
  type Heartbeat,
  type PolicyService,
  type WorkloadAgent,
  type WorkloadCa,
  type WorkloadCredentials,
} from '@lockstep/control-plane';
import {
  assembleControlPlane,
  COLLECTOR_PATH,
  createWebhook,
  RULES,
  verifyWebhookSignature,
  type AssembledControlPlane,
  type Detector,
  type StoreLocation,
} from '../src/index.ts';

const TD = 'shop.test';
const REGISTERED_GUARD = new URL('./fixtures/registered-guard.ts', import.meta.url).pathname;
const scratch = mkdtempSync(join(tmpdir(), 'lockstep-detect-'));
const quiet = { info() {}, warn() {}, error() {} };
const postgres = await testPostgres();

const PG_SCHEMA = postgres.schema();

/** How each backend is opened, and how an attacker with database access edits an event. */
const BACKENDS = [
  {
    name: 'sqlite',
    skip: false as string | false,
    location: (dir: string): StoreLocation => ({ sqlite: join(dir, 'cp.db') }),
    async tamper(dir: string, source: string) {
      const db = new DatabaseSync(join(dir, 'cp.db'));
      db.exec('DROP TRIGGER audit_events_no_update');
      db.prepare(
        'UPDATE audit_events SET event = replace(event, \'"allow"\', \'"deny"\') WHERE source = ? AND seq = 1',
      ).run(source);
      db.close();
    },
  },
  {
    name: 'postgres',
    skip: postgres.skip,
    location: (): StoreLocation => ({ postgres: postgres.url, schema: PG_SCHEMA }),
    async tamper(_dir: string, source: string) {
      const client = new pg.Client({ connectionString: postgres.url, options: `-c search_path=${PG_SCHEMA}` });
      await client.connect();
      await client.query('ALTER TABLE audit_events DISABLE TRIGGER ALL');
      await client.query(
        'UPDATE audit_events SET event = replace(event, \'"allow"\', \'"deny"\') WHERE source = $1 AND seq = 1',
        [source],
      );
      await client.end();
    },
  },
];
after(async () => {
  rmSync(scratch, { recursive: true, force: true });
  await postgres.cleanup();
});

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
const iso = (time: number) => new Date(time).toISOString();

async function until(condition: () => Promise<boolean>, what: () => string, limitMs = 30_000): Promise<void> {
  const started = Date.now();
  while (!(await condition())) {
    if (Date.now() - started > limitMs) assert.fail(`timed out after ${limitMs} ms waiting until ${what()}`);
    await sleep(100);
  }
}

/** A decision event as a guard ships it. */
function decisionEvent(service: string, fields: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    time: new Date().toISOString(),
    service,
    requestId: randomUUID(),
    caller: null,
    sub: null,
    txn: null,
    method: 'POST',
    route: '/call',
    action: `${service}:call`,
    resource: service,
    decision: 'allow',
    policyIds: [],
    policyVersion: null,
    reason: 'LOCKSTEP_ALLOW',
    dryRun: false,
    latencyMs: 1,
    traceId: null,
    ...fields,
  };
}

for (const backend of BACKENDS) {
  describe(`detections on ${backend.name}`, { skip: backend.skip }, () => {
    const dir = join(scratch, backend.name);
    const policyDir = join(dir, 'policies');

    let ca: WorkloadCa;
    let store: ControlPlaneStore;
    let policy: PolicyService;
    let detector: Detector;
    let controlPlane: AssembledControlPlane;
    let minter: TxnTokenMinter;
    const creds: Record<string, WorkloadCredentials> = {};
    const agents: WorkloadAgent[] = [];
    const guards: Guard[] = [];
    const apps: FastifyInstance[] = [];
    const heartbeats: Heartbeat[] = [];
    const children: ChildProcess[] = [];
    const origins: Record<string, string> = {};

    async function guardedService(service: 'orders' | 'payments', actions: string[]): Promise<void> {
      const scratch = dir;
      const { token } = await createJoinToken(store, ca, { service, createdBy: 'cli' });
      const agent = await joinAsWorkload({
        url: controlPlane.url,
        trustDomain: TD,
        joinToken: token,
        service,
        heartbeatMs: 500,
      });
      const guard = await createGuard({
        ...agent.guardOptions({ auditSpoolDir: join(scratch, `spool-${service}`) }),
        txnTokenKeys: { jwks: minter.jwks },
        logger: quiet,
      });
      agent.attach(guard);
      const app = Fastify({ https: guard.tlsOptions() });
      await app.register(lockstep, { guard });
      // The calls send a JSON body: a route takes one only with a body schema (here one that checks nothing).
      for (const action of actions)
        app.post(
          `/${action.replace(':', '/')}`,
          { config: { lockstep: { action } }, schema: { body: { type: 'object' } } },
          async () => ({ ok: true }),
        );
      await app.listen({ host: '127.0.0.1', port: 0 });
      origins[service] = `https://127.0.0.1:${(app.server.address() as AddressInfo).port}`;
      agents.push(agent);
      guards.push(guard);
      apps.push(app);
    }

    before(async () => {
      cpSync(new URL('../../guard/example/policies/', import.meta.url), policyDir, { recursive: true });
      const scratch = dir;
      writeFileSync(
        join(policyDir, 'payments.cedarschema'),
        'namespace Lockstep { action "payments:charge" appliesTo { principal: Workload, resource: Service, context: RequestContext }; }\n',
      );
      writeFileSync(
        join(policyDir, 'payments.cedar'),
        '@id("orders-charges")\npermit (principal == Lockstep::Workload::"spiffe://shop.test/svc/orders", action == Lockstep::Action::"payments:charge", resource == Lockstep::Service::"payments") when { context.roles.contains("customer") };\n',
      );
      // Sign-ins reach the detector, and the collector's batches; sweeps run when a test asks.
      controlPlane = await assembleControlPlane({
        trustDomain: TD,
        keyDir: join(scratch, 'keys'),
        store: backend.location(dir),
        policyDir,
        watchPolicy: false,
        checkpointIntervalMs: 3_600_000,
        // Silence after 3 s, outages and transactions judged 1 s after the last word: the rules, sooner.
        detection: {
          sweepMs: 3_600_000,
          verifyEveryMs: 0,
          thresholds: { silentAfterMs: 3_000, outageSettleMs: 1_000, txnSettleMs: 1_000 },
        },
        idp: {
          clients: [
            {
              client_id: 'gateway',
              client_secret: 'detections-test-secret',
              redirect_uris: ['https://gateway.shop.test/callback'],
            },
          ],
          resource: { indicator: 'https://shop.test/api', scopes: [] },
        },
        output: { warning: () => {}, error: () => {} },
      });
      ({ ca, store, detector } = controlPlane);
      policy = controlPlane.policy as PolicyService;
      minter = await createTxnTokenMinter({ trustDomain: TD });
      for (const service of ['gateway', 'inventory', 'reports']) {
        creds[service] = await joinControlPlane({
          url: controlPlane.url,
          trustDomain: TD,
          joinToken: (await createJoinToken(store, ca, { service, createdBy: 'cli' })).token,
          service,
        });
      }
      await guardedService('orders', ['orders:read']);
      await guardedService('payments', ['payments:charge']);
    });

    after(async () => {
      for (const child of children) child.kill('SIGKILL');
      for (const heartbeat of heartbeats) await heartbeat.stop();
      for (const app of apps) await app.close();
      for (const agent of agents) await agent.close();
      for (const guard of guards) await guard.close();
      await controlPlane.close();
    });

    async function call(
      as: WorkloadCredentials | { chainPem: string; keyPem: string } | null,
      url: string,
      txnToken?: string,
    ): Promise<number> {
      const agent = new Agent({
        connect: { ...(as === null ? {} : { cert: as.chainPem, key: as.keyPem }), rejectUnauthorized: false },
      });
      try {
        const response = await request(url, {
          method: 'POST',
          dispatcher: agent,
          headers: { 'content-type': 'application/json', ...(txnToken ? { 'txn-token': txnToken } : {}) },
          body: '{}',
        });
        await response.body.dump();
        return response.statusCode;
      } catch {
        return 0;
      } finally {
        await agent.close();
      }
    }

    const customerToken = (sub = 'alice', extra: Record<string, unknown> = {}) =>
      minter.mint({ sub, tctx: { roles: ['customer'] }, req_wl: `spiffe://${TD}/svc/gateway`, ...extra });

    /** Waits (sweeping) until an alert of `rule` about `subject` is stored. */
    function alert(rule: string, subject?: string, limitMs = 15_000): Promise<AlertRecord> {
      return alertWhere(rule, (entry) => subject === undefined || entry.subject === subject, limitMs, subject);
    }

    /** Sweeps for `ms`, so that whatever the rules would raise by then is raised. */
    async function sweepFor(ms: number): Promise<void> {
      for (const started = Date.now(); Date.now() - started < ms; await sleep(200)) await detector.sweep();
    }

    /** A guarded service in a process of its own (fixtures/registered-guard.ts), joined through `url`; resolves once it has reported. */
    async function registeredGuard(
      service: string,
      url = controlPlane.url,
    ): Promise<{ child: ChildProcess; stderr: () => string }> {
      const { token } = await createJoinToken(store, ca, { service, createdBy: 'cli' });
      const configPath = join(dir, `${service}-${randomUUID()}.json`);
      writeFileSync(configPath, JSON.stringify({ url, trustDomain: TD, service, joinToken: token, heartbeatMs: 250 }));
      const startedAt = Date.now();
      const child = spawn(process.execPath, [REGISTERED_GUARD, configPath], { stdio: ['ignore', 'ignore', 'pipe'] });
      children.push(child);
      let stderr = '';
      child.stderr?.setEncoding('utf8').on('data', (chunk: string) => {
        stderr += chunk;
      });
      await until(
        async () => (await store.services()).some((entry) => entry.service === service && entry.lastSeen >= startedAt),
        () => `${service} reported to the registry (its stderr: ${stderr})`,
      );
      return { child, stderr: () => stderr };
    }

    /** Ships a batch to the collector as `who`, as a guard's sink does (late, after an outage, or out of order with others). */
    async function ship(
      who: WorkloadCredentials,
      stream: string,
      written: number,
      events: { seq: number; event: Record<string, unknown> }[],
    ): Promise<void> {
      const agent = new Agent({
        connect: { cert: who.chainPem, key: who.keyPem, ca: ca.bundlePem, checkServerIdentity: () => undefined },
      });
      try {
        const response = await request(`${controlPlane.url}${COLLECTOR_PATH}`, {
          method: 'POST',
          dispatcher: agent,
          headers: { 'content-type': 'application/json', 'content-encoding': 'gzip' },
          body: gzipSync(JSON.stringify({ stream, dropped: 0, written, events })),
        });
        assert.equal(response.statusCode, 200, await response.body.text());
      } finally {
        await agent.close();
      }
    }

    async function alertWhere(
      rule: string,
      match: (alert: AlertRecord) => boolean,
      limitMs = 15_000,
      subject?: string,
    ): Promise<AlertRecord> {
      const started = Date.now();
      for (;;) {
        await detector.sweep();
        const found = (await store.alerts(500)).find((entry) => entry.rule === rule && match(entry));
        if (found !== undefined) return found;
        if (Date.now() - started > limitMs)
          return assert.fail(
            `no ${rule} alert${subject ? ` about ${subject}` : ''} within ${limitMs} ms; alerts: ${(await store.alerts(50)).map((entry) => `${entry.rule}:${entry.subject}`).join(', ')}`,
          );
        await new Promise((resolve) => setTimeout(resolve, 250));
      }
    }

    describe('detections, with real traffic', () => {
      it('lateral movement: a service calls another on an edge the policy refuses and that never happened', async () => {
        const token = await customerToken();
        assert.equal(await call(creds.gateway ?? null, `${origins.orders}/orders/read`, token), 200);
        assert.equal(await call(creds.inventory ?? null, `${origins.payments}/payments/charge`, token), 403);
        const found = await alert('lateral-movement', 'inventory→payments');
        assert.equal(found.severity, 'high');
        assert.equal(JSON.parse(found.details).action, 'payments:charge');
        assert.equal(
          (await store.alerts(500)).some(
            (entry) => entry.rule === 'lateral-movement' && entry.subject === 'gateway→orders',
          ),
          false,
          'an allowed edge raises nothing',
        );
      });

      it('denial burst: 20 refusals for one caller within a minute', async () => {
        const token = await customerToken();
        for (let index = 0; index < 20; index += 1)
          assert.equal(await call(creds.reports ?? null, `${origins.orders}/orders/read`, token), 403);
        assert.match(
          (await alert('denial-burst', `spiffe://${TD}/svc/reports`)).summary,
          /20 requests from spiffe:\/\/shop\.test\/svc\/reports refused/,
        );
      });

      it("a scanner's probes raise no alert and count toward no rule; the same burst from a workload is a denial burst", async () => {
        const certificateFor = (uri: string) =>
          issueCertificate(
            { cert: ca.signer.cert, privateKey: ca.signer.privateKey, chainBelowRoot: [ca.intermediatePem] },
            { uris: [uri] },
          );
        const scanner = await certificateFor(`spiffe://${TD}/scanner/ci`);
        const mimic = await certificateFor(`spiffe://${TD}/svc/mimic`);
        const token = await customerToken();
        for (let index = 0; index < 25; index += 1)
          assert.equal(await call(scanner, `${origins.orders}/orders/read`, token), 403);
        for (let index = 0; index < 25; index += 1)
          assert.equal(await call(mimic, `${origins.orders}/orders/read`, token), 403);
        // Wait until the collector has every one of them (the guards ship in batches), then sweep.
        const collected = async (caller: string) => {
          let count = 0;
          for (const head of await store.auditHeads())
            count += (await store.auditEvents(head.source, 0, 100_000)).filter((stored) =>
              stored.event.includes(`"caller":"${caller}"`),
            ).length;
          return count;
        };
        await until(
          async () =>
            (await collected(`spiffe://${TD}/scanner/ci`)) === 25 &&
            (await collected(`spiffe://${TD}/svc/mimic`)) === 25,
          () => 'the 50 decisions reached the collector',
        );
        assert.match(
          (await alert('denial-burst', `spiffe://${TD}/svc/mimic`)).summary,
          /20 requests from spiffe:\/\/shop\.test\/svc\/mimic refused/,
        );
        const aboutTheScanner = (await store.alerts(1_000)).filter((entry) =>
          `${entry.subject} ${entry.details}`.includes('/scanner/'),
        );
        assert.deepEqual(
          aboutTheScanner.map((entry) => `${entry.rule}: ${entry.summary}`),
          [],
        );
      });

      it("use after revocation: a revoked user's token used at a service", async () => {
        const token = await customerToken('mallory');
        await controlPlane.revoke({ kind: 'sub', value: 'mallory', reason: 'test', actor: 'cli' });
        const started = Date.now();
        while ((await call(creds.gateway ?? null, `${origins.orders}/orders/read`, token)) !== 401) {
          if (Date.now() - started > 5_000) assert.fail('the revocation never reached the guard');
          await new Promise((resolve) => setTimeout(resolve, 50));
        }
        const found = await alert('use-after-revocation');
        assert.equal(JSON.parse(found.details).service, 'orders');
      });

      it('untrusted certificates: three calls without a trusted client certificate', async () => {
        const foreign = await (
          await createTestCa({ trustDomain: TD, name: 'Rogue CA' })
        ).issueSvid({ service: 'gateway' });
        for (const who of [null, foreign, foreign])
          await call(who, `${origins.orders}/orders/read`, await customerToken());
        assert.match(
          (await alert('untrusted-certificate', 'orders')).summary,
          /3 requests to orders without a trusted client certificate/,
        );
      });

      it('Txn-Token replay: a transaction presented by a workload it never reached, and after expiry', async () => {
        const token = await customerToken('carol');
        const txn = JSON.parse(Buffer.from(token.split('.')[1] ?? '', 'base64url').toString()).txn as string;
        assert.equal(
          await call(creds.gateway ?? null, `${origins.orders}/orders/read`, token),
          200,
          'the chain: gateway → orders',
        );
        assert.equal(await call(creds.reports ?? null, `${origins.payments}/payments/charge`, token), 403);
        const replay = await alert('txn-replay', txn);
        assert.match(replay.summary, /spiffe|reports presented the Txn-Token/);
        const now = Math.floor(Date.now() / 1000);
        const expired = await customerToken('dave', { iat: now - 400, exp: now - 60 });
        assert.equal(await call(creds.gateway ?? null, `${origins.orders}/orders/read`, expired), 401);
        // A refused token's claims are not trusted, so the alert is about the request that carried it.
        const late = await alertWhere('txn-replay', (entry) => /expired Txn-Token/.test(entry.summary));
        assert.equal(JSON.parse(late.details).caller, `spiffe://${TD}/svc/gateway`);
      });

      it('brute force and password spraying at the identity provider', async () => {
        await createUser(store, {
          username: 'erin',
          password: 'a long enough passphrase for her',
          roles: ['customer'],
        });
        const browser = createTestBrowser({ ca: ca.bundlePem });
        try {
          const authorize = `${controlPlane.idp?.issuer}/auth?client_id=gateway&response_type=code&redirect_uri=${encodeURIComponent('https://gateway.shop.test/callback')}&scope=openid&code_challenge=${'a'.repeat(43)}&code_challenge_method=S256`;
          const login = await browser.open(authorize, { stopAt: (url) => url.host === 'gateway.shop.test' });
          for (let attempt = 0; attempt < 5; attempt += 1)
            await browser.submit(login, { username: 'erin', password: `wrong guess ${attempt}` });
          assert.equal((await alert('brute-force', 'erin')).severity, 'high');
          for (let index = 0; index < 10; index += 1)
            await browser.submit(login, { username: `sprayed-${index}`, password: 'Winter2026!Winter' });
          assert.match(
            (await alert('password-spraying', '127.0.0.1')).summary,
            /10 different accounts from 127\.0\.0\.1/,
          );
        } finally {
          await browser.close();
        }
      });

      it('SVID expiring without renewal, and a guard in dry-run', async () => {
        const keys = await crypto.subtle.generateKey({ name: 'ECDSA', namedCurve: 'P-256' }, true, ['sign', 'verify']);
        const csr = await x509.Pkcs10CertificateRequestGenerator.create({
          keys,
          signingAlgorithm: { name: 'ECDSA', hash: 'SHA-256' },
        });
        const svid = await issueSvidFromCsr(ca, { csrPem: csr.toString('pem'), service: 'ledger', ttlSeconds: 300 });
        const keyPem = x509.PemConverter.encode(await crypto.subtle.exportKey('pkcs8', keys.privateKey), 'PRIVATE KEY');
        const bundle = (await policy.bundleFor('ledger'))?.bundle ?? '';
        const ledger = await createGuard({
          service: 'ledger',
          trustDomain: TD,
          trustBundle: ca.bundlePem,
          svid: { cert: svid.chainPem, key: keyPem },
          txnTokenKeys: { jwks: minter.jwks },
          policy: { keys: { keys: [...policy.publicJwks.keys] }, bundle },
          mode: 'dry-run',
          logger: quiet,
        });
        guards.push(ledger);
        heartbeats.push(
          startRegistryHeartbeat({
            url: controlPlane.url,
            trustDomain: TD,
            tls: { cert: svid.chainPem, key: keyPem, ca: ca.bundlePem },
            guard: ledger,
            intervalMs: 500,
          }),
        );
        assert.match((await alert('svid-expiring', `spiffe://${TD}/svc/ledger`)).summary, /has not been renewed/);
        assert.match((await alert('dry-run', `spiffe://${TD}/svc/ledger`)).summary, /dry-run mode/);
      });

      it('policy drift: a guard still enforcing the old version 10 s after a change', async () => {
        writeFileSync(
          join(policyDir, 'orders.cedar'),
          '@id("gateway-admin-read")\npermit (principal == Lockstep::Workload::"spiffe://shop.test/svc/gateway", action == Lockstep::Action::"orders:read", resource == Lockstep::Service::"orders") when { context.roles.contains("admin") };\n',
        );
        const stale = creds.reports as WorkloadCredentials;
        const old = {
          routes: [],
          policyVersion: 'old-version-that-missed-the-update',
          svidExpiresAt: stale.expiresAt.toISOString(),
          mode: 'enforce' as const,
          guardVersion: '0.1.0',
          service: 'reports',
          spiffeId: stale.spiffeId,
        };
        heartbeats.push(
          startRegistryHeartbeat({
            url: controlPlane.url,
            trustDomain: TD,
            tls: { cert: stale.chainPem, key: stale.keyPem, ca: stale.bundlePem },
            guard: { status: () => old },
            intervalMs: 500,
          }),
        );
        await policy.reload();
        const found = await alert('policy-drift', stale.spiffeId, 20_000);
        assert.match(found.summary, /reports enforces old-version-/);
      });

      it('audit gaps, spool drops, and a trail that no longer verifies', async () => {
        const agent = new Agent({
          connect: {
            cert: creds.reports?.chainPem,
            key: creds.reports?.keyPem,
            ca: ca.bundlePem,
            checkServerIdentity: () => undefined,
          },
        });
        const event = {
          time: new Date().toISOString(),
          service: 'reports',
          requestId: 'x',
          caller: null,
          sub: null,
          txn: null,
          method: 'GET',
          route: '/',
          action: 'x',
          resource: 'reports',
          decision: 'allow',
          policyIds: [],
          policyVersion: null,
          reason: 'LOCKSTEP_ALLOW',
          dryRun: false,
          latencyMs: 1,
          traceId: null,
        };
        try {
          const response = await request(`${controlPlane.url}${COLLECTOR_PATH}`, {
            method: 'POST',
            dispatcher: agent,
            headers: { 'content-type': 'application/json', 'content-encoding': 'gzip' },
            body: gzipSync(
              JSON.stringify({
                stream: 'reports-1',
                dropped: 7,
                events: [
                  { seq: 1, event },
                  { seq: 4, event },
                ],
              }),
            ),
          });
          assert.equal(response.statusCode, 200);
          await response.body.dump();
        } finally {
          await agent.close();
        }
        assert.match(
          (await alert('audit-gap', `spiffe://${TD}/svc/reports`)).summary,
          /2 decision events of reports never arrived/,
        );
        assert.match((await alert('spool-drops', `spiffe://${TD}/svc/reports`)).summary, /dropped 7 decision events/);

        await controlPlane.checkpointer.checkpoint();
        await backend.tamper(dir, `spiffe://${TD}/svc/orders`);
        assert.match(
          (await alert('audit-gap', `spiffe://${TD}/svc/orders`)).summary,
          /does not verify: event 1 was changed/,
        );
      });

      it('a guard that stops reporting: one guard-silent alert, not repeated, a note when it is back; none after a clean stop', async () => {
        const { child: crashing } = await registeredGuard('shipping');
        const { child: tidy } = await registeredGuard('newsletter');
        const stopped = new Promise((resolve) => tidy.once('exit', resolve));
        tidy.kill('SIGTERM');
        assert.equal(await stopped, 0, 'the clean stop exits 0');
        assert.equal(
          (await store.services()).some((entry) => entry.service === 'newsletter'),
          false,
          'a clean stop leaves the registry',
        );
        crashing.kill('SIGKILL');
        const silent = await alert('guard-silent', `spiffe://${TD}/svc/shipping`, 20_000);
        assert.equal(silent.severity, 'high');
        assert.match(
          silent.summary,
          /^shipping \(spiffe:\/\/shop\.test\/svc\/shipping\) has not reported since \d{4}-\d\d-\d\dT[\d:.]+Z \(\d+ s\) and did not deregister: check that it is running/,
        );
        assert.ok(Number.isFinite(Date.parse(JSON.parse(silent.details).lastSeen)));
        // Silent for another silence period and more: no second alert.
        await sweepFor(4_000);
        const silences = (await store.alerts(1_000)).filter(
          (entry) => entry.rule === 'guard-silent' && /\/(shipping|newsletter)$/.test(entry.subject),
        );
        assert.deepEqual(
          silences.map((entry) => entry.subject),
          [`spiffe://${TD}/svc/shipping`],
          'one alert for the crash, none for the clean stop',
        );
        // Started again (the same identity): a note that it is back.
        await registeredGuard('shipping');
        assert.match(
          (await alert('guard-resumed', `spiffe://${TD}/svc/shipping`)).summary,
          /^shipping \(spiffe:\/\/shop\.test\/svc\/shipping\) reports again after \d+ s of silence$/,
        );
      });

      it('the control plane unreachable: one alert naming the services and the window; the refusals it caused are no denial burst', async () => {
        // The network between mailer and the control plane: cut (listener closed, connections reset), then
        // restored on the same port.
        const { hostname, port } = new URL(controlPlane.url);
        const network = await startTcpRelay({ target: { host: hostname, port: Number(port) } });
        try {
          const mailer = await registeredGuard('mailer', `https://127.0.0.1:${network.port}`);
          await network.cut();
          const cutAt = Date.now();
          await sleep(1_500);
          const restoredAt = Date.now();
          await network.restore();
          // The guard says so with its first heartbeat that gets through.
          await until(
            async () =>
              (await store.services()).some((entry) => entry.service === 'mailer' && entry.lastSeen > restoredAt),
            () => `mailer reported again (its stderr: ${mailer.stderr()})`,
          );
          // The edge refused 25 requests of one user meanwhile, for want of a Txn-Token; its spool ships them now.
          const refusal = (index: number) =>
            decisionEvent('gateway', {
              time: iso(cutAt + index * 40),
              sub: 'alice',
              action: 'gateway:GET /api/orders',
              decision: 'deny',
              reason: 'CONTROL_PLANE_UNAVAILABLE',
            });
          await ship(
            creds.gateway as WorkloadCredentials,
            'gateway-outage',
            25,
            Array.from({ length: 25 }, (_, index) => ({ seq: index + 1, event: refusal(index) })),
          );
          const outage = await alert('control-plane-unreachable');
          assert.equal(outage.severity, 'high');
          assert.match(
            outage.summary,
            /^the control plane was unreachable from gateway, mailer between \S+ and \S+ \(\d+ s\); 25 requests were refused for want of it: check its log/,
          );
          const details = JSON.parse(outage.details) as { services: string[]; from: string; to: string };
          assert.deepEqual(details.services, ['gateway', 'mailer']);
          assert.ok(
            Math.abs(Date.parse(details.from) - cutAt) < 1_000,
            `the outage began at the cut (${details.from}, cut at ${iso(cutAt)})`,
          );
          assert.ok(
            Date.parse(details.to) >= restoredAt - 1_000 && Date.parse(details.to) <= Date.now(),
            `it ended when the network was back (${details.to}, back at ${iso(restoredAt)})`,
          );
          // More word of the same outage (late events): still one alert; and no caller is blamed for it.
          await ship(
            creds.gateway as WorkloadCredentials,
            'gateway-outage',
            30,
            Array.from({ length: 5 }, (_, index) => ({ seq: 26 + index, event: refusal(25 + index) })),
          );
          await sweepFor(2_500);
          const alerts = await store.alerts(1_000);
          assert.equal(
            alerts.filter((entry) => entry.rule === 'control-plane-unreachable').length,
            1,
            'one alert per outage',
          );
          assert.deepEqual(
            alerts
              .filter((entry) => entry.rule === 'denial-burst' && !entry.subject.startsWith('spiffe://'))
              .map((entry) => entry.subject),
            [],
          );
        } finally {
          // Cut for good: mailer is killed at the end, and the relay must not keep the test process alive.
          await network.close();
        }
      });

      /** A workload of its own, and a guard's heartbeat as `who` (with `unreachable` as a guard sends it after an outage). */
      const workload = async (service: string) =>
        joinControlPlane({
          url: controlPlane.url,
          trustDomain: TD,
          joinToken: (await createJoinToken(store, ca, { service, createdBy: 'cli' })).token,
          service,
        });
      async function registry(
        who: WorkloadCredentials,
        path: 'heartbeat' | 'deregister',
        unreachable?: { since: number; until: number },
      ): Promise<void> {
        const agent = new Agent({
          connect: { cert: who.chainPem, key: who.keyPem, ca: ca.bundlePem, checkServerIdentity: () => undefined },
        });
        try {
          const response = await request(`${controlPlane.url}/v1/registry/${path}`, {
            method: 'POST',
            dispatcher: agent,
            ...(path === 'deregister'
              ? {}
              : {
                  headers: { 'content-type': 'application/json' },
                  body: JSON.stringify({
                    routes: [],
                    policyVersion: null,
                    svidExpiresAt: who.expiresAt.toISOString(),
                    mode: 'enforce',
                    guardVersion: '0.1.0',
                    ...(unreachable === undefined
                      ? {}
                      : { unreachable: { since: iso(unreachable.since), until: iso(unreachable.until) } }),
                  }),
                }),
          });
          assert.equal(response.statusCode, 204, await response.body.text());
        } finally {
          await agent.close();
        }
      }
      /** A real outage as `who`'s guard tells it: a report, then (a second later) the window since it; then a clean stop. */
      async function cutOff(who: WorkloadCredentials): Promise<void> {
        await registry(who, 'heartbeat');
        const since = Date.now();
        await sleep(1_000);
        await registry(who, 'heartbeat', { since, until: Date.now() });
        await registry(who, 'deregister');
      }
      const outageAlerts = async () =>
        (await store.alerts(1_000))
          .filter((entry) => entry.rule === 'control-plane-unreachable')
          .map((entry) => ({ ...entry, services: (JSON.parse(entry.details) as { services: string[] }).services }));
      /** Refusals for want of the control plane, as a compromised workload writes them: any time it likes. */
      function forger(service: string): (times: number[]) => Promise<void> {
        const creds = workload(service);
        let seq = 0;
        return async (times) => {
          const events = times.map((time) => ({
            seq: (seq += 1),
            event: decisionEvent(service, {
              time: iso(time),
              sub: 'alice',
              decision: 'deny',
              reason: 'CONTROL_PLANE_UNAVAILABLE',
            }),
          }));
          await ship(await creds, `${service}-1`, seq, events);
        };
      }

      it('a workload cannot push a real outage out of memory, nor flood: one alert naming it, and the real one on time', async () => {
        const forgeRefusals = forger('intruder');
        await cutOff(await workload('pricing'));
        // 101 outages two minutes apart in 1970, 101 in the last hours, and one in the year 2999: in one batch.
        const lastHours = Date.now() - 60 * 60_000;
        await forgeRefusals([
          ...Array.from({ length: 101 }, (_, index) => index * 120_000),
          ...Array.from({ length: 101 }, (_, index) => lastHours - index * 120_000),
          Date.parse('2999-01-01T00:00:00Z'),
        ]);
        const real = await alertWhere('control-plane-unreachable', (entry) =>
          JSON.parse(entry.details).services.includes('pricing'),
        );
        assert.match(real.summary, /^the control plane was unreachable from (intruder, )?pricing between /);
        await sweepFor(2_000);
        const alerts = await outageAlerts();
        const aboutItself = alerts.filter(
          (entry) => entry.services.includes('intruder') && !entry.services.includes('pricing'),
        );
        assert.ok(
          aboutItself.length <= 1,
          `at most one alert names only the intruder (the cooldown): ${aboutItself.map((entry) => entry.summary.slice(0, 120)).join('\n')}`,
        );
        // Dates only: the request ids in the details are random hex, which may hold those digits.
        assert.deepEqual(
          alerts
            .filter((entry) => /\b(1970|2999)-\d\d-\d\dT/.test(`${entry.summary} ${entry.details}`))
            .map((entry) => entry.summary),
          [],
          'no time from long ago or the future',
        );
      });

      it('svid-recovery-reuse: an expired SVID presented for recovery a second time', async () => {
        // An SVID of this CA that expired 5 s ago (the clock set back for its issuance only).
        const keys = await crypto.subtle.generateKey({ name: 'ECDSA', namedCurve: 'P-256' }, true, ['sign', 'verify']);
        const csr = await x509.Pkcs10CertificateRequestGenerator.create({
          name: 'CN=cloned',
          keys,
          signingAlgorithm: { name: 'ECDSA', hash: 'SHA-256' },
        });
        const past = { ...ca, now: () => Date.now() - 65_000 };
        const expired = await issueSvidFromCsr(past, {
          csrPem: csr.toString('pem'),
          service: 'cloned',
          ttlSeconds: 60,
        });
        const keyPem = x509.PemConverter.encode(await crypto.subtle.exportKey('pkcs8', keys.privateKey), 'PRIVATE KEY');
        const recover = async () => {
          const fresh = await x509.Pkcs10CertificateRequestGenerator.create({
            name: 'CN=cloned',
            keys: await crypto.subtle.generateKey({ name: 'ECDSA', namedCurve: 'P-256' }, true, ['sign', 'verify']),
            signingAlgorithm: { name: 'ECDSA', hash: 'SHA-256' },
          });
          const dispatcher = new Agent({
            connect: { ca: ca.bundlePem, cert: expired.chainPem, key: keyPem, checkServerIdentity: () => undefined },
          });
          try {
            const response = await request(new URL('/v1/recover', controlPlane.url), {
              method: 'POST',
              dispatcher,
              headers: { 'content-type': 'application/json' },
              body: JSON.stringify({ csr: fresh.toString('pem') }),
            });
            return { status: response.statusCode, body: (await response.body.json()) as { error?: string } };
          } finally {
            await dispatcher.close();
          }
        };
        assert.equal((await recover()).status, 200, 'the first recovery (the workload, or its clone)');
        const second = await recover();
        assert.equal(second.body.error, 'LOCKSTEP_CP_RECOVERY_REFUSED');
        const raised = await alert('svid-recovery-reuse', `spiffe://${TD}/svc/cloned`);
        assert.equal(raised.severity, 'critical');
        assert.match(raised.summary, /was presented for recovery after it was recovered/);
      });

      it("a workload that keeps talking of an outage does not hold back the alert about another service's", async () => {
        const forgeRefusals = forger('chatterer');
        await forgeRefusals([Date.now()]);
        await cutOff(await workload('search'));
        let talking = true;
        const chatter = (async () => {
          while (talking) {
            await forgeRefusals([Date.now()]);
            await sleep(200);
          }
        })();
        try {
          // The settling time is 1 s in this suite; the intruder's word is never that old.
          const real = await alertWhere(
            'control-plane-unreachable',
            (entry) => JSON.parse(entry.details).services.includes('search'),
            15_000,
          );
          assert.ok(Date.parse(JSON.parse(real.details).from) >= Date.now() - 60_000, 'the window of this outage');
        } finally {
          talking = false;
          await chatter;
        }
      });

      it("Txn-Token replay is judged by the events' own times, not their arrival order", async () => {
        const who: Record<string, WorkloadCredentials> = {};
        for (const service of ['stock', 'warehouse', 'billing']) {
          who[service] = await joinControlPlane({
            url: controlPlane.url,
            trustDomain: TD,
            joinToken: (await createJoinToken(store, ca, { service, createdBy: 'cli' })).token,
            service,
          });
        }
        const hop = (txn: string, service: string, caller: string, time: number) =>
          decisionEvent(service, { txn, sub: 'alice', caller: `spiffe://${TD}/svc/${caller}`, time: iso(time) });
        // The chain cart → stock → warehouse → billing, a minute ago. warehouse has shipped its events
        // up to an earlier one, and numbered this transaction's (2) without shipping it yet.
        const t0 = Date.now() - 60_000;
        const txn = randomUUID();
        await ship(who.warehouse as WorkloadCredentials, 'warehouse-1', 2, [
          { seq: 1, event: decisionEvent('warehouse', { time: iso(t0 - 1_000) }) },
        ]);
        await ship(who.stock as WorkloadCredentials, 'stock-1', 1, [{ seq: 1, event: hop(txn, 'stock', 'cart', t0) }]);
        await ship(who.billing as WorkloadCredentials, 'billing-1', 1, [
          { seq: 1, event: hop(txn, 'billing', 'warehouse', t0 + 10) },
        ]);
        await sweepFor(2_500);
        await ship(who.warehouse as WorkloadCredentials, 'warehouse-1', 2, [
          { seq: 2, event: hop(txn, 'warehouse', 'stock', t0 + 5) },
        ]);
        await sweepFor(1_500);
        assert.deepEqual(
          (await store.alerts(1_000)).filter((entry) => entry.subject === txn).map((entry) => entry.summary),
          [],
          'events arriving out of order are no replay',
        );
        // A true replay: billing sees warehouse present a transaction that never reached it, while
        // every decision warehouse took until then has arrived.
        const stolen = randomUUID();
        await ship(who.stock as WorkloadCredentials, 'stock-1', 2, [
          { seq: 2, event: hop(stolen, 'stock', 'cart', t0 + 1_000) },
        ]);
        await ship(who.billing as WorkloadCredentials, 'billing-1', 2, [
          { seq: 2, event: hop(stolen, 'billing', 'warehouse', t0 + 1_010) },
        ]);
        await ship(who.warehouse as WorkloadCredentials, 'warehouse-1', 3, [
          { seq: 3, event: decisionEvent('warehouse') },
        ]);
        const replay = await alert('txn-replay', stolen);
        assert.match(
          replay.summary,
          /^warehouse presented the Txn-Token of transaction \S+ at billing, but the transaction never reached warehouse$/,
        );
      });

      it('covers every documented rule', async () => {
        const raised = new Set((await store.alerts(1_000)).map((entry) => entry.rule));
        assert.deepEqual(
          RULES.map((rule) => rule.id).filter((id) => !raised.has(id)),
          [],
        );
      });
    });
  });
}

describe('webhook delivery', () => {
  it('signs the body and retries until the receiver takes it', async () => {
    const secret = 'webhook-secret-0123456789abcdef-0123';
    const received: { ok: boolean; body: string }[] = [];
    let attempts = 0;
    const server: Server = createServer((incoming, response) => {
      let body = '';
      incoming
        .setEncoding('utf8')
        .on('data', (chunk: string) => {
          body += chunk;
        })
        .on('end', () => {
          attempts += 1;
          const ok = verifyWebhookSignature(
            secret,
            String(incoming.headers['x-lockstep-timestamp']),
            body,
            String(incoming.headers['x-lockstep-signature']),
          );
          received.push({ ok, body });
          response.writeHead(attempts < 3 ? 503 : 204).end();
        });
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    try {
      const webhook = createWebhook({
        url: `http://127.0.0.1:${(server.address() as AddressInfo).port}/alerts`,
        secret,
        backoffMs: 20,
      });
      const latest: AlertRecord = {
        id: 'alert-1',
        rule: 'lateral-movement',
        severity: 'high',
        subject: 'inventory→payments',
        summary: 'inventory called payments',
        details: '{"edge":"inventory→payments"}',
        at: Date.now(),
      };
      assert.equal(await webhook.deliver(latest), true);
      assert.equal(attempts, 3, 'two refusals, then delivered');
      assert.ok(
        received.every((entry) => entry.ok),
        'every attempt is signed',
      );
      assert.equal((JSON.parse(received[2]?.body ?? '{}') as { alert: { id: string } }).alert.id, latest.id);
      assert.equal(
        verifyWebhookSignature(secret, String(Date.now()), received[2]?.body ?? '', 'sha256=00'),
        false,
        'a forged signature does not verify',
      );
      assert.throws(() => createWebhook({ url: 'http://hooks.example/alerts', secret }), /must use https/);
    } finally {
      await new Promise<void>((resolve) => server.close(() => resolve()));
    }
  });
});

it('documents every rule, with its threshold, in the README', async () => {
  const { readFile } = await import('node:fs/promises');
  const readme = await readFile(new URL('../README.md', import.meta.url), 'utf8');
  for (const rule of RULES)
    assert.ok(readme.includes(`| \`${rule.id}\` | ${rule.severity} | ${rule.fires} |`), `README row for ${rule.id}`);
});
