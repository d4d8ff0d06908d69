/**
 * Lifetimes, configured and kept. Workloads' SVIDs live as long as the control plane is told
 * (`svidLifetimeSeconds`), and the agent renews them at the share of their life it is told (`renewAt`).
 *
 * The control plane's own certificate is renewed while it runs. It is an SVID like any other (at most
 * 24 h): a control plane that kept the one issued at start would refuse every client at the handshake
 * a day later — renewals included, so every workload would go down within its SVID's lifetime. It is
 * re-issued with a fresh key at half its life; new connections get the new one, and workloads keep
 * joining and renewing. Real TLS, a real CA; the lifetime is shortened for the test.
 */
import assert from 'node:assert/strict';
import { X509Certificate } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { connect } from 'node:tls';
import { after, before, describe, it } from 'node:test';
import { joinAsWorkload, joinControlPlane, type AgentEvent } from '@lockstep/workload';
import {
  createJoinToken,
  openSqliteStore,
  openWorkloadCa,
  startControlPlane,
  type ControlPlaneStore,
  type RunningControlPlane,
  type WorkloadCa,
} from '../src/index.ts';

const TD = 'shop.test';
const LIFETIME_SECONDS = 4;
const SVID_LIFETIME_SECONDS = 60;
const scratch = mkdtempSync(join(tmpdir(), 'lockstep-server-cert-'));
let ca: WorkloadCa;
let store: ControlPlaneStore;
let controlPlane: RunningControlPlane;

before(async () => {
  ca = await openWorkloadCa({ trustDomain: TD, keyDir: join(scratch, 'keys') });
  store = openSqliteStore(':memory:');
  controlPlane = await startControlPlane({
    ca,
    store,
    serverCertificateSeconds: LIFETIME_SECONDS,
    svidLifetimeSeconds: SVID_LIFETIME_SECONDS,
  });
});

after(async () => {
  await controlPlane.close();
  await store.close();
  rmSync(scratch, { recursive: true, force: true });
});

/** The certificate the control plane presents on a new connection. */
function served(): Promise<X509Certificate> {
  const { hostname, port } = new URL(controlPlane.url);
  return new Promise((resolve, reject) => {
    const socket = connect({ host: hostname, port: Number(port), rejectUnauthorized: false }, () => {
      const certificate = new X509Certificate(socket.getPeerCertificate().raw);
      socket.destroy();
      resolve(certificate);
    });
    socket.once('error', reject);
  });
}

describe("the control plane's own certificate", () => {
  it('is re-issued at half its life, with a fresh key, and workloads keep joining past the first one', async () => {
    const first = await served();
    const lifetimeMs = first.validToDate.getTime() - Date.now();
    assert.ok(lifetimeMs <= LIFETIME_SECONDS * 1000 + 1000, `a ${LIFETIME_SECONDS} s certificate`);
    // Past the first certificate's end: a control plane that never renewed would fail every handshake here.
    await new Promise((resolve) => setTimeout(resolve, first.validToDate.getTime() - Date.now() + 500));
    const now = await served();
    assert.notEqual(now.serialNumber, first.serialNumber, 're-issued');
    assert.notEqual(
      now.publicKey.export({ format: 'der', type: 'spki' }).toString('hex'),
      first.publicKey.export({ format: 'der', type: 'spki' }).toString('hex'),
      'with a fresh key',
    );
    assert.ok(now.validToDate.getTime() > Date.now(), 'valid now');
    const { token } = await createJoinToken(store, ca, { service: 'orders', createdBy: 'cli' });
    const joined = await joinControlPlane({
      url: controlPlane.url,
      trustDomain: TD,
      joinToken: token,
      service: 'orders',
    });
    assert.equal(joined.spiffeId, `spiffe://${TD}/svc/orders`, 'a workload joins over the renewed certificate');
  });
});

describe("workloads' SVID lifetime and renewal point", () => {
  const lifeOf = (expiresAt: Date | string) => (new Date(expiresAt).getTime() - Date.now()) / 1000;

  it('issues SVIDs of the configured lifetime at join, and refuses a lifetime outside 60 s – 24 h at start', async () => {
    const { token } = await createJoinToken(store, ca, { service: 'reports', createdBy: 'cli' });
    const joined = await joinControlPlane({
      url: controlPlane.url,
      trustDomain: TD,
      joinToken: token,
      service: 'reports',
    });
    const life = lifeOf(joined.expiresAt);
    assert.ok(life > SVID_LIFETIME_SECONDS - 10 && life <= SVID_LIFETIME_SECONDS, `${life} s`);
    for (const svidLifetimeSeconds of [59, 86_401, 1.5])
      await assert.rejects(
        startControlPlane({ ca, store, svidLifetimeSeconds }),
        /svidLifetimeSeconds must be .* from 60 to 86400/,
      );
  });

  it('renews at the configured share of the life (renewAt), again with the configured lifetime', async () => {
    const events: AgentEvent[] = [];
    const { token } = await createJoinToken(store, ca, { service: 'billing', createdBy: 'cli' });
    await assert.rejects(
      joinAsWorkload({ url: controlPlane.url, trustDomain: TD, joinToken: token, service: 'billing', renewAt: 0.95 }),
      /renewAt is the share of the SVID's life .* from 0\.1 to 0\.9/,
    );
    const started = Date.now();
    const agent = await joinAsWorkload({
      url: controlPlane.url,
      trustDomain: TD,
      joinToken: token,
      service: 'billing',
      renewAt: 0.1, // 6 s into a 60 s life, less up to 6 s of jitter
      stateDir: join(scratch, 'billing'),
      onEvent: (event) => events.push(event),
    });
    try {
      for (let i = 0; i < 200 && !events.some((event) => event.kind === 'renewed'); i++)
        await new Promise((resolve) => setTimeout(resolve, 50));
      const renewed = events.find((event) => event.kind === 'renewed');
      assert.ok(renewed, 'renewed within 10 s of a 60 s life');
      assert.ok(Date.now() - started < 8_000, `after ${Date.now() - started} ms`);
      const life = lifeOf(agent.credentials.expiresAt);
      assert.ok(life > SVID_LIFETIME_SECONDS - 10 && life <= SVID_LIFETIME_SECONDS, `renewed for ${life} s`);
    } finally {
      await agent.close();
    }
  });
});
