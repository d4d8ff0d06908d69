/**
 * Every detection rule, triggered by real traffic through real guards (or, for sign-in, the real
 * identity provider), shipped to the real collector over mTLS. Each test asserts the alert that the
 * rule raises — and, for the webhook, that it is delivered signed and retried.
 */
import assert from 'node:assert/strict';
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
import { createTestBrowser, createTestCa, createTxnTokenMinter, issueCertificate, testPostgres, type TxnTokenMinter } from '@lockstep/testkit';
import {
  createJoinToken, createUser, issueSvidFromCsr, joinAsWorkload, joinControlPlane, startRegistryHeartbeat,
  type AlertRecord, type ControlPlaneStore, type Heartbeat, type PolicyService, type WorkloadAgent, type WorkloadCa, type WorkloadCredentials,
} from '@lockstep/control-plane';
import {
  assembleControlPlane, COLLECTOR_PATH, createWebhook, RULES, verifyWebhookSignature,
  type AssembledControlPlane, type Detector, type StoreLocation,
} from '../src/index.ts';

const TD = 'shop.test';
const scratch = mkdtempSync(join(tmpdir(), 'lockstep-detect-'));
const quiet = { info() {}, warn() {}, error() {} };
const postgres = await testPostgres();

const PG_SCHEMA = postgres.schema();

/** How each backend is opened, and how an attacker with database access edits an event. */
const BACKENDS = [
  {
    name: 'sqlite', skip: false as string | false,
    location: (dir: string): StoreLocation => ({ sqlite: join(dir, 'cp.db') }),
    async tamper(dir: string, source: string) {
      const db = new DatabaseSync(join(dir, 'cp.db'));
      db.exec('DROP TRIGGER audit_events_no_update');
      db.prepare("UPDATE audit_events SET event = replace(event, '\"allow\"', '\"deny\"') WHERE source = ? AND seq = 1").run(source);
      db.close();
    },
  },
  {
    name: 'postgres', skip: postgres.skip,
    location: (): StoreLocation => ({ postgres: postgres.url, schema: PG_SCHEMA }),
    async tamper(_dir: string, source: string) {
      const client = new pg.Client({ connectionString: postgres.url, options: `-c search_path=${PG_SCHEMA}` });
      await client.connect();
      await client.query('ALTER TABLE audit_events DISABLE TRIGGER ALL');
      await client.query("UPDATE audit_events SET event = replace(event, '\"allow\"', '\"deny\"') WHERE source = $1 AND seq = 1", [source]);
      await client.end();
    },
  },
];
after(async () => {
  rmSync(scratch, { recursive: true, force: true });
  await postgres.cleanup();
});

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
    const origins: Record<string, string> = {};

    async function guardedService(service: 'orders' | 'payments', actions: string[]): Promise<void> {
      const scratch = dir;
      const { token } = await createJoinToken(store, ca, { service, createdBy: 'cli' });
      const agent = await joinAsWorkload({ url: controlPlane.url, trustDomain: TD, joinToken: token, service, heartbeatMs: 500 });
      const guard = await createGuard({ ...agent.guardOptions({ auditSpoolDir: join(scratch, `spool-${service}`) }), txnTokenKeys: { jwks: minter.jwks }, logger: quiet });
      agent.attach(guard);
      const app = Fastify({ https: guard.tlsOptions() });
      await app.register(lockstep, { guard });
      // The calls send a JSON body: a route takes one only with a body schema (here one that checks nothing).
      for (const action of actions) app.post(`/${action.replace(':', '/')}`, { config: { lockstep: { action } }, schema: { body: { type: 'object' } } }, async () => ({ ok: true }));
      await app.listen({ host: '127.0.0.1', port: 0 });
      origins[service] = `https://127.0.0.1:${(app.server.address() as AddressInfo).port}`;
      agents.push(agent);
      guards.push(guard);
      apps.push(app);
    }

    before(async () => {
      cpSync(new URL('../../guard/example/policies/', import.meta.url), policyDir, { recursive: true });
      const scratch = dir;
      writeFileSync(join(policyDir, 'payments.cedarschema'), 'namespace Lockstep { action "payments:charge" appliesTo { principal: Workload, resource: Service, context: RequestContext }; }\n');
      writeFileSync(join(policyDir, 'payments.cedar'), '@id("orders-charges")\npermit (principal == Lockstep::Workload::"spiffe://shop.test/svc/orders", action == Lockstep::Action::"payments:charge", resource == Lockstep::Service::"payments") when { context.roles.contains("customer") };\n');
      // Sign-ins reach the detector, and the collector's batches; sweeps run when a test asks.
      controlPlane = await assembleControlPlane({
        trustDomain: TD, keyDir: join(scratch, 'keys'), store: backend.location(dir), policyDir, watchPolicy: false,
        checkpointIntervalMs: 3_600_000, detection: { sweepMs: 3_600_000, verifyEveryMs: 0 },
        idp: {
          clients: [{ client_id: 'gateway', client_secret: 'detections-test-secret', redirect_uris: ['https://gateway.shop.test/callback'] }],
          resource: { indicator: 'https://shop.test/api', scopes: [] },
        },
        output: { warning: () => {}, error: () => {} },
      });
      ({ ca, store, detector } = controlPlane);
      policy = controlPlane.policy as PolicyService;
      minter = await createTxnTokenMinter({ trustDomain: TD });
      for (const service of ['gateway', 'inventory', 'reports']) {
        creds[service] = await joinControlPlane({ url: controlPlane.url, trustDomain: TD, joinToken: (await createJoinToken(store, ca, { service, createdBy: 'cli' })).token, service });
      }
      await guardedService('orders', ['orders:read']);
      await guardedService('payments', ['payments:charge']);
    });

    after(async () => {
      for (const heartbeat of heartbeats) await heartbeat.stop();
      for (const app of apps) await app.close();
      for (const agent of agents) await agent.close();
      for (const guard of guards) await guard.close();
      await controlPlane.close();
    });

    async function call(as: WorkloadCredentials | { chainPem: string; keyPem: string } | null, url: string, txnToken?: string): Promise<number> {
      const agent = new Agent({ connect: { ...(as === null ? {} : { cert: as.chainPem, key: as.keyPem }), rejectUnauthorized: false } });
      try {
        const response = await request(url, { method: 'POST', dispatcher: agent, headers: { 'content-type': 'application/json', ...(txnToken ? { 'txn-token': txnToken } : {}) }, body: '{}' });
        await response.body.dump();
        return response.statusCode;
      } catch {
        return 0;
      } finally {
        await agent.close();
      }
    }

    const customerToken = (sub = 'alice', extra: Record<string, unknown> = {}) => minter.mint({ sub, tctx: { roles: ['customer'] }, req_wl: `spiffe://${TD}/svc/gateway`, ...extra });

    /** Waits (sweeping) until an alert of `rule` about `subject` is stored. */
    function alert(rule: string, subject?: string, limitMs = 15_000): Promise<AlertRecord> {
      return alertWhere(rule, (entry) => subject === undefined || entry.subject === subject, limitMs, subject);
    }

    async function alertWhere(rule: string, match: (alert: AlertRecord) => boolean, limitMs = 15_000, subject?: string): Promise<AlertRecord> {
      const started = Date.now();
      for (;;) {
        await detector.sweep();
        const found = (await store.alerts(500)).find((entry) => entry.rule === rule && match(entry));
        if (found !== undefined) return found;
        if (Date.now() - started > limitMs) return assert.fail(`no ${rule} alert${subject ? ` about ${subject}` : ''} within ${limitMs} ms; alerts: ${(await store.alerts(50)).map((entry) => `${entry.rule}:${entry.subject}`).join(', ')}`);
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
        assert.equal((await store.alerts(500)).some((entry) => entry.rule === 'lateral-movement' && entry.subject === 'gateway→orders'), false, 'an allowed edge raises nothing');
      });

      it('denial burst: 20 refusals for one caller within a minute', async () => {
        const token = await customerToken();
        for (let index = 0; index < 20; index += 1) assert.equal(await call(creds.reports ?? null, `${origins.orders}/orders/read`, token), 403);
        assert.match((await alert('denial-burst', `spiffe://${TD}/svc/reports`)).summary, /20 requests from spiffe:\/\/shop\.test\/svc\/reports refused/);
      });

      it('a scanner\'s probes raise no alert: 25 refusals from spiffe://<td>/scanner/ci, no denial burst', async () => {
        const scanner = await issueCertificate({ cert: ca.signer.cert, privateKey: ca.signer.privateKey, chainBelowRoot: [ca.intermediatePem] }, { uris: [`spiffe://${TD}/scanner/ci`] });
        const token = await customerToken();
        for (let index = 0; index < 25; index += 1) assert.equal(await call(scanner, `${origins.orders}/orders/read`, token), 403);
        // Wait until the collector has every one of them (the guards ship in batches), then sweep.
        const started = Date.now();
        for (let collected = 0; collected < 25; await new Promise((resolve) => setTimeout(resolve, 100))) {
          collected = 0;
          for (const head of await store.auditHeads()) {
            collected += (await store.auditEvents(head.source, 0, 100_000)).filter((stored) => stored.event.includes(`"caller":"spiffe://${TD}/scanner/ci"`)).length;
          }
          assert.ok(Date.now() - started < 15_000, `the scanner's decisions reached the collector: ${collected} of 25`);
        }
        await detector.sweep();
        assert.equal((await store.alerts(500)).some((entry) => entry.subject.includes('/scanner/')), false);
      });

      it('use after revocation: a revoked user\'s token used at a service', async () => {
        const token = await customerToken('mallory');
        await controlPlane.revoke({ kind: 'sub', value: 'mallory', reason: 'test', actor: 'cli' });
        const started = Date.now();
        while (await call(creds.gateway ?? null, `${origins.orders}/orders/read`, token) !== 401) {
          if (Date.now() - started > 5_000) assert.fail('the revocation never reached the guard');
          await new Promise((resolve) => setTimeout(resolve, 50));
        }
        const found = await alert('use-after-revocation');
        assert.equal(JSON.parse(found.details).service, 'orders');
      });

      it('untrusted certificates: three calls without a trusted client certificate', async () => {
        const foreign = await (await createTestCa({ trustDomain: TD, name: 'Rogue CA' })).issueSvid({ service: 'gateway' });
        for (const who of [null, foreign, foreign]) await call(who, `${origins.orders}/orders/read`, await customerToken());
        assert.match((await alert('untrusted-certificate', 'orders')).summary, /3 requests to orders without a trusted client certificate/);
      });

      it('Txn-Token replay: a transaction presented by a workload it never reached, and after expiry', async () => {
        const token = await customerToken('carol');
        const txn = JSON.parse(Buffer.from(token.split('.')[1] ?? '', 'base64url').toString()).txn as string;
        assert.equal(await call(creds.gateway ?? null, `${origins.orders}/orders/read`, token), 200, 'the chain: gateway → orders');
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
        await createUser(store, { username: 'erin', password: 'a long enough passphrase for her', roles: ['customer'] });
        const browser = createTestBrowser({ ca: ca.bundlePem });
        try {
          const authorize = `${controlPlane.idp?.issuer}/auth?client_id=gateway&response_type=code&redirect_uri=${encodeURIComponent('https://gateway.shop.test/callback')}&scope=openid&code_challenge=${'a'.repeat(43)}&code_challenge_method=S256`;
          const login = await browser.open(authorize, { stopAt: (url) => url.host === 'gateway.shop.test' });
          for (let attempt = 0; attempt < 5; attempt += 1) await browser.submit(login, { username: 'erin', password: `wrong guess ${attempt}` });
          assert.equal((await alert('brute-force', 'erin')).severity, 'high');
          for (let index = 0; index < 10; index += 1) await browser.submit(login, { username: `sprayed-${index}`, password: 'Winter2026!Winter' });
          assert.match((await alert('password-spraying', '127.0.0.1')).summary, /10 different accounts from 127\.0\.0\.1/);
        } finally {
          await browser.close();
        }
      });

      it('SVID expiring without renewal, and a guard in dry-run', async () => {
        const keys = await crypto.subtle.generateKey({ name: 'ECDSA', namedCurve: 'P-256' }, true, ['sign', 'verify']);
        const csr = await x509.Pkcs10CertificateRequestGenerator.create({ keys, signingAlgorithm: { name: 'ECDSA', hash: 'SHA-256' } });
        const svid = await issueSvidFromCsr(ca, { csrPem: csr.toString('pem'), service: 'ledger', ttlSeconds: 300 });
        const keyPem = x509.PemConverter.encode(await crypto.subtle.exportKey('pkcs8', keys.privateKey), 'PRIVATE KEY');
        const bundle = (await policy.bundleFor('ledger'))?.bundle ?? '';
        const ledger = await createGuard({ service: 'ledger', trustDomain: TD, trustBundle: ca.bundlePem, svid: { cert: svid.chainPem, key: keyPem }, txnTokenKeys: { jwks: minter.jwks }, policy: { keys: { keys: [...policy.publicJwks.keys] }, bundle }, mode: 'dry-run', logger: quiet });
        guards.push(ledger);
        heartbeats.push(startRegistryHeartbeat({ url: controlPlane.url, trustDomain: TD, tls: { cert: svid.chainPem, key: keyPem, ca: ca.bundlePem }, guard: ledger, intervalMs: 500 }));
        assert.match((await alert('svid-expiring', `spiffe://${TD}/svc/ledger`)).summary, /has not been renewed/);
        assert.match((await alert('dry-run', `spiffe://${TD}/svc/ledger`)).summary, /dry-run mode/);
      });

      it('policy drift: a guard still enforcing the old version 10 s after a change', async () => {
        writeFileSync(join(policyDir, 'orders.cedar'), '@id("gateway-admin-read")\npermit (principal == Lockstep::Workload::"spiffe://shop.test/svc/gateway", action == Lockstep::Action::"orders:read", resource == Lockstep::Service::"orders") when { context.roles.contains("admin") };\n');
        const stale = creds.reports as WorkloadCredentials;
        const old = { routes: [], policyVersion: 'old-version-that-missed-the-update', svidExpiresAt: stale.expiresAt.toISOString(), mode: 'enforce' as const, guardVersion: '0.1.0', service: 'reports', spiffeId: stale.spiffeId };
        heartbeats.push(startRegistryHeartbeat({ url: controlPlane.url, trustDomain: TD, tls: { cert: stale.chainPem, key: stale.keyPem, ca: stale.bundlePem }, guard: { status: () => old }, intervalMs: 500 }));
        await policy.reload();
        const found = await alert('policy-drift', stale.spiffeId, 20_000);
        assert.match(found.summary, /reports enforces old-version-/);
      });

      it('audit gaps, spool drops, and a trail that no longer verifies', async () => {
        const agent = new Agent({ connect: { cert: creds.reports?.chainPem, key: creds.reports?.keyPem, ca: ca.bundlePem, checkServerIdentity: () => undefined } });
        const event = { time: new Date().toISOString(), service: 'reports', requestId: 'x', caller: null, sub: null, txn: null, method: 'GET', route: '/', action: 'x', resource: 'reports', decision: 'allow', policyIds: [], policyVersion: null, reason: 'LOCKSTEP_ALLOW', dryRun: false, latencyMs: 1, traceId: null };
        try {
          const response = await request(`${controlPlane.url}${COLLECTOR_PATH}`, {
            method: 'POST', dispatcher: agent, headers: { 'content-type': 'application/json', 'content-encoding': 'gzip' },
            body: gzipSync(JSON.stringify({ stream: 'reports-1', dropped: 7, events: [{ seq: 1, event }, { seq: 4, event }] })),
          });
          assert.equal(response.statusCode, 200);
          await response.body.dump();
        } finally {
          await agent.close();
        }
        assert.match((await alert('audit-gap', `spiffe://${TD}/svc/reports`)).summary, /2 decision events of reports never arrived/);
        assert.match((await alert('spool-drops', `spiffe://${TD}/svc/reports`)).summary, /dropped 7 decision events/);

        await controlPlane.checkpointer.checkpoint();
        await backend.tamper(dir, `spiffe://${TD}/svc/orders`);
        assert.match((await alert('audit-gap', `spiffe://${TD}/svc/orders`)).summary, /does not verify: event 1 was changed/);
      });

      it('covers every documented rule', async () => {
        const raised = new Set((await store.alerts(1_000)).map((entry) => entry.rule));
        assert.deepEqual(RULES.map((rule) => rule.id).filter((id) => !raised.has(id)), []);
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
      incoming.setEncoding('utf8').on('data', (chunk: string) => { body += chunk; }).on('end', () => {
        attempts += 1;
        const ok = verifyWebhookSignature(secret, String(incoming.headers['x-lockstep-timestamp']), body, String(incoming.headers['x-lockstep-signature']));
        received.push({ ok, body });
        response.writeHead(attempts < 3 ? 503 : 204).end();
      });
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    try {
      const webhook = createWebhook({ url: `http://127.0.0.1:${(server.address() as AddressInfo).port}/alerts`, secret, backoffMs: 20 });
      const latest: AlertRecord = { id: 'alert-1', rule: 'lateral-movement', severity: 'high', subject: 'inventory→payments', summary: 'inventory called payments', details: '{"edge":"inventory→payments"}', at: Date.now() };
      assert.equal(await webhook.deliver(latest), true);
      assert.equal(attempts, 3, 'two refusals, then delivered');
      assert.ok(received.every((entry) => entry.ok), 'every attempt is signed');
      assert.equal((JSON.parse(received[2]?.body ?? '{}') as { alert: { id: string } }).alert.id, latest.id);
      assert.equal(verifyWebhookSignature(secret, String(Date.now()), received[2]?.body ?? '', 'sha256=00'), false, 'a forged signature does not verify');
      assert.throws(() => createWebhook({ url: 'http://hooks.example/alerts', secret }), /must use https/);
    } finally {
      await new Promise<void>((resolve) => server.close(() => resolve()));
    }
  });
});

it('documents every rule, with its threshold, in the README', async () => {
  const { readFile } = await import('node:fs/promises');
  const readme = await readFile(new URL('../README.md', import.meta.url), 'utf8');
  for (const rule of RULES) assert.ok(readme.includes(`| \`${rule.id}\` | ${rule.severity} | ${rule.fires} |`), `README row for ${rule.id}`);
});
