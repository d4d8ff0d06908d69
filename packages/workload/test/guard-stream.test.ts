/**
 * The guard stream's own client (undici.request + eventsource-parser), against a real control plane
 * over mTLS: it prints no "experimental" warning into the service's log, stays on one connection
 * while events flow, comes back after the control plane ends the stream (a revoked caller's stream,
 * a restart) and applies what follows, reports a refusal with its reason, and close() leaves nothing
 * running. The target is a recorder: what the guard does with each event is tested in the guard.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { cpSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import {
  createJoinToken,
  createPolicyService,
  openSigningKey,
  openSqliteStore,
  openWorkloadCa,
  startControlPlane,
  type ControlPlaneStore,
  type PolicyService,
  type RunningControlPlane,
  type WorkloadCa,
} from '@lockstep/control-plane';
import {
  connectGuardStream,
  joinControlPlane,
  type GuardStream,
  type StreamEvent,
  type WorkloadCredentials,
} from '../src/index.ts';

const TD = 'shop.test';
const scratch = mkdtempSync(join(tmpdir(), 'lockstep-guard-stream-'));

let ca: WorkloadCa;
let store: ControlPlaneStore;
let policy: PolicyService;
let controlPlane: RunningControlPlane;

before(async () => {
  cpSync(new URL('../../guard/example/policies/', import.meta.url), join(scratch, 'policies'), { recursive: true });
  ca = await openWorkloadCa({ trustDomain: TD, keyDir: join(scratch, 'keys') });
  store = openSqliteStore(join(scratch, 'cp.db'));
  const signingKey = await openSigningKey(join(scratch, 'keys'), 'policy');
  policy = await createPolicyService({ dir: join(scratch, 'policies'), signingKey });
  controlPlane = await startControlPlane({ ca, store, policy });
});

after(async () => {
  policy.close();
  await controlPlane.close();
  await store.close();
  rmSync(scratch, { recursive: true, force: true });
});

async function enrol(service: string): Promise<WorkloadCredentials> {
  const { token } = await createJoinToken(store, ca, { service, createdBy: 'cli' });
  return joinControlPlane({ url: controlPlane.url, trustDomain: TD, joinToken: token, service });
}

const tlsOf = (who: WorkloadCredentials) => ({ cert: who.chainPem, key: who.keyPem, ca: who.bundlePem });

/** A stream into a recorder; polls only after a minute down, so that what arrives came by the stream. */
function follow(who: WorkloadCredentials) {
  const events: StreamEvent[] = [];
  const revoked: string[] = [];
  const stream = connectGuardStream({
    url: controlPlane.url,
    trustDomain: TD,
    tls: tlsOf(who),
    pollMs: 60_000,
    target: {
      setPolicyBundle: async () => {},
      revoke: ({ value }) => revoked.push(value),
      lift() {},
      setTrustBundle() {},
    },
    onEvent: (event) => events.push(event),
  });
  const count = (kind: StreamEvent['kind']) => events.filter((event) => event.kind === kind).length;
  return { stream, events, revoked, count };
}

async function eventually(check: () => boolean, what: string, limitMs = 10_000): Promise<void> {
  const started = Date.now();
  while (!check()) {
    if (Date.now() - started > limitMs) assert.fail(`waited ${limitMs} ms for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

describe('the guard stream', () => {
  let orders: WorkloadCredentials;
  let stream: GuardStream | null = null;
  before(async () => {
    orders = await enrol('orders');
  });
  after(async () => {
    await stream?.close();
  });

  it('connects without printing a process warning (undici\'s EventSource prints "experimental")', async () => {
    const warnings: Error[] = [];
    const onWarning = (warning: Error) => warnings.push(warning);
    process.on('warning', onWarning);
    try {
      const followed = follow(orders);
      stream = followed.stream;
      const opened = () => followed.count('connected') === 1 && followed.count('policy') === 1;
      await eventually(opened, 'the stream to open and bring the policy');
      await new Promise((resolve) => setImmediate(resolve));
    } finally {
      process.off('warning', onWarning);
    }
    assert.deepEqual(
      warnings.map((warning) => `${warning.name}: ${warning.message}`),
      [],
    );
  });

  it('stays on one connection while events flow, and after a restart reconnects and applies what follows', async () => {
    const followed = follow(orders);
    await stream?.close();
    stream = followed.stream;
    await eventually(() => followed.count('connected') === 1, 'the stream to open');
    await controlPlane.revoke({ kind: 'sub', value: 'mallory', reason: 'test', actor: 'test' });
    await eventually(() => followed.revoked.includes('mallory'), 'the revocation');
    assert.equal(followed.count('disconnected'), 0, 'delivered on the open stream, not by a reconnection');

    const port = Number(new URL(controlPlane.url).port);
    await controlPlane.close();
    await eventually(() => followed.count('disconnected') >= 1, 'the stream to be seen down');
    controlPlane = await startControlPlane({ ca, store, policy, port });
    await eventually(() => followed.count('connected') === 2, 'the stream to reconnect');
    await controlPlane.revoke({ kind: 'sub', value: 'trudy', reason: 'test', actor: 'test' });
    await eventually(() => followed.revoked.includes('trudy'), 'the revocation made after the restart');
    assert.deepEqual(followed.revoked, ['mallory', 'trudy'], 'resumed from its position: nothing applied twice');
  });
});

describe('a stream the control plane ends: its own workload revoked', () => {
  it('reconnects when the response ends, reports the refusal with its reason, and comes back once lifted', async () => {
    const inventory = await enrol('inventory');
    const { spiffeId } = inventory;
    const followed = follow(inventory);
    try {
      await eventually(() => followed.count('connected') === 1, 'the stream to open');
      await controlPlane.revoke({ kind: 'spiffeId', value: spiffeId, reason: 'test', actor: 'test' });
      await eventually(() => followed.revoked.includes(spiffeId), "its own revocation, its stream's last event");
      const refusal = () =>
        followed.events.find(
          (event) => event.kind === 'disconnected' && event.reason.includes('LOCKSTEP_CP_PEER_REVOKED'),
        );
      await eventually(() => refusal() !== undefined, 'the refused reconnection');
      assert.match(JSON.stringify(refusal()), /GET \/v1\/stream answered 401/);
      assert.equal(followed.count('connected'), 1);

      await controlPlane.lift({ kind: 'spiffeId', value: spiffeId, reason: 'test', actor: 'test' });
      await eventually(() => followed.count('connected') === 2, 'the stream to reconnect once lifted');
      const lifted = followed.events.some((event) => event.kind === 'lift' && event.revocation.value === spiffeId);
      assert.ok(lifted, 'the lift, caught up on reconnection');
    } finally {
      await followed.stream.close();
    }
  });
});

describe('close()', () => {
  it('during a connection attempt, aborts it at once and leaves nothing running: the process exits', async () => {
    const payments = await enrol('payments');
    const fixture = fileURLToPath(new URL('./fixtures/close-while-connecting.ts', import.meta.url));
    const started = performance.now();
    const { stdout } = await promisify(execFile)(process.execPath, ['--conditions=@lockstep/source', fixture], {
      env: { ...process.env, LOCKSTEP_TEST_STREAM: JSON.stringify({ trustDomain: TD, tls: tlsOf(payments) }) },
      timeout: 8_000,
    });
    const { closeMs } = JSON.parse(stdout) as { closeMs: number };
    assert.ok(closeMs < 1_000, `close() took ${closeMs} ms`);
    assert.ok(performance.now() - started < 8_000, 'the process exited by itself');
  });
});
