/**
 * The dashboard's server side: administrators sign in through Lockstep's own identity provider
 * (code + PKCE, the real login form); without a session the API answers 401 and pages redirect to
 * the sign-in; a signed-in user without the admin role gets 403; the API shows the registry's
 * posture, alerts, events and a transaction's chain.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { createTestBrowser } from '@lockstep/testkit';
import {
  createJoinToken,
  createUser,
  joinControlPlane,
  startRegistryHeartbeat,
  type Heartbeat,
  type WorkloadCa,
} from '@lockstep/control-plane';
import { assembleControlPlane, type AssembledControlPlane } from '../src/index.ts';

const TD = 'shop.test';
const scratch = mkdtempSync(join(tmpdir(), 'lockstep-dashboard-'));
let ca: WorkloadCa;
let controlPlane: AssembledControlPlane;
let heartbeat: Heartbeat;

before(async () => {
  // The dashboard signs administrators in through the identity provider, for this resource.
  controlPlane = await assembleControlPlane({
    trustDomain: TD,
    keyDir: join(scratch, 'keys'),
    store: { sqlite: join(scratch, 'cp.db') },
    policyDir: new URL('../../guard/example/policies/', import.meta.url).pathname,
    watchPolicy: false,
    idp: { resource: { indicator: 'https://lockstep.test/dashboard', scopes: [] } },
    // No sweep meanwhile: the alerts shown are the test's own.
    detection: { sweepMs: 3_600_000 },
    output: { warning: () => {} },
  });
  const { store } = controlPlane;
  ca = controlPlane.ca;
  await createUser(store, { username: 'root', password: 'the operators passphrase', roles: ['admin'] });
  await createUser(store, { username: 'alice', password: 'violet mountain teapot 42', roles: ['customer'] });
  const orders = await joinControlPlane({
    url: controlPlane.url,
    trustDomain: TD,
    joinToken: (await createJoinToken(store, ca, { service: 'orders', createdBy: 'cli' })).token,
    service: 'orders',
  });
  const status = {
    service: 'orders',
    spiffeId: orders.spiffeId,
    mode: 'enforce' as const,
    policyVersion: 'an-old-version',
    svidExpiresAt: orders.expiresAt.toISOString(),
    routes: [],
    guardVersion: '0.1.0',
  };
  heartbeat = startRegistryHeartbeat({
    url: controlPlane.url,
    trustDomain: TD,
    tls: { cert: orders.chainPem, key: orders.keyPem, ca: orders.bundlePem },
    guard: { status: () => status },
    intervalMs: 60_000,
  });
  await heartbeat.beat();
  await store.addAlert({
    id: 'a1',
    rule: 'lateral-movement',
    severity: 'high',
    subject: 'inventory→payments',
    summary: 'inventory called payments',
    details: '{"edge":"inventory→payments"}',
    at: Date.now(),
  });
});

after(async () => {
  await heartbeat.stop();
  await controlPlane.close();
  rmSync(scratch, { recursive: true, force: true });
});

async function signIn(username: string, password: string) {
  const browser = createTestBrowser({ ca: ca.bundlePem });
  const login = await browser.open(`${controlPlane.url}/dashboard`);
  assert.match(login.url, /\/oidc\/interaction\//, 'without a session the dashboard sends you to sign in');
  const done = await browser.submit(login, { username, password });
  return { browser, done };
}

describe('dashboard', () => {
  it('answers 401 to the API without a session', async () => {
    const browser = createTestBrowser({ ca: ca.bundlePem });
    try {
      const answer = await browser.request(`${controlPlane.url}/dashboard/api/alerts`);
      assert.equal(answer.status, 401);
      assert.deepEqual(answer.body, { error: 'LOGIN_REQUIRED', login: '/dashboard/login' });
    } finally {
      await browser.close();
    }
  });

  it('lets an administrator in, through the identity provider, and shows posture, drift and alerts', async () => {
    const { browser, done } = await signIn('root', 'the operators passphrase');
    try {
      assert.equal(done.status, 200);
      assert.equal(done.url, `${controlPlane.url}/dashboard`);
      assert.match(done.body, /<title>Lockstep dashboard<\/title>/);
      assert.match(String(done.headers['content-security-policy']), /script-src 'self'/);
      assert.deepEqual((await browser.request(`${controlPlane.url}/dashboard/api/session`)).body, { sub: 'root' });
      const overview = await browser.request(`${controlPlane.url}/dashboard/api/overview`);
      assert.equal(overview.status, 200);
      const [orders] = (
        overview.body as { services: { service: string; drift: boolean; mode: string; stale: boolean }[] }
      ).services;
      assert.deepEqual(
        [orders?.service, orders?.drift, orders?.mode, orders?.stale],
        ['orders', true, 'enforce', false],
      );
      const alerts = await browser.request(`${controlPlane.url}/dashboard/api/alerts`);
      assert.deepEqual(
        (alerts.body as { alerts: { rule: string; details: unknown }[] }).alerts.map((alert) => [
          alert.rule,
          alert.details,
        ]),
        [['lateral-movement', { edge: 'inventory→payments' }]],
      );
      const events = await browser.request(`${controlPlane.url}/dashboard/api/events?decision=deny`);
      assert.deepEqual(events.body, { events: [] });
      assert.equal(
        (await browser.request(`${controlPlane.url}/dashboard/api/alerts`, { method: 'DELETE' })).status,
        404,
        'nothing can be changed',
      );
    } finally {
      await browser.close();
    }
  });

  it('refuses a signed-in user without the admin role', async () => {
    const { browser, done } = await signIn('alice', 'violet mountain teapot 42');
    try {
      assert.equal(done.status, 403);
      assert.match(done.body, /Administrators only/);
      assert.equal((await browser.request(`${controlPlane.url}/dashboard/api/overview`)).status, 401);
    } finally {
      await browser.close();
    }
  });
});
