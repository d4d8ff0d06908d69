/**
 * PostgreSQL going away under a running control plane. A pooled connection the database ends (a
 * restart) is reported and replaced, and the process lives on. A replica cut off from the database
 * stops looking healthy: it ends its guards' streams within a few seconds and refuses new ones, and
 * answers what needs the store with 503 LOCKSTEP_CP_STORE — so clients given several replicas move to
 * one that still reads the database, and get its revocations there at once. The cut is made with a TCP
 * relay between one replica and PostgreSQL. Needs PostgreSQL (LOCKSTEP_TEST_PG, default
 * postgres://postgres@127.0.0.1:5432/test); skipped with a message when it is unreachable, a failure
 * when LOCKSTEP_REQUIRE_PG=1 (CI).
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import pg from 'pg';
import { request } from 'undici';
import { controlPlaneEndpoints, type ControlPlaneEndpoints } from '@lockstep/identity';
import { startTcpRelay, testPostgres } from '@lockstep/testkit';
import {
  connectGuardStream,
  controlPlaneAgent,
  joinControlPlane,
  renewWithControlPlane,
  type GuardStream,
  type StreamEvent,
  type WorkloadCredentials,
} from '@lockstep/workload';
import {
  createJoinToken,
  openPostgresStore,
  openWorkloadCa,
  startControlPlane,
  type ControlPlaneStore,
  type RunningControlPlane,
} from '../src/index.ts';

const TD = 'shop.test';
const postgres = await testPostgres();
const PG_URL = postgres.url;
const scratch = mkdtempSync(join(tmpdir(), 'lockstep-store-outage-'));
const opened: { stores: ControlPlaneStore[]; servers: RunningControlPlane[]; streams: GuardStream[] } = {
  stores: [],
  servers: [],
  streams: [],
};

after(async () => {
  for (const stream of opened.streams) await stream.close();
  for (const server of opened.servers) await server.close();
  for (const store of opened.stores) await store.close();
  rmSync(scratch, { recursive: true, force: true });
  await postgres.cleanup();
});

async function waitFor(what: string, ready: () => boolean, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!ready()) {
    if (Date.now() > deadline) throw new Error(`${what}: not within ${timeoutMs} ms`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

/** A TCP relay to PostgreSQL; `cut()` closes every connection through it and refuses new ones. */
async function relayToPostgres(): Promise<{ url: string; cut(): Promise<void> }> {
  const target = new URL(PG_URL);
  const relay = await startTcpRelay({ target: { host: target.hostname, port: Number(target.port || 5432) } });
  const via = new URL(PG_URL);
  via.hostname = relay.host;
  via.port = String(relay.port);
  return { url: via.href, cut: () => relay.cut() };
}

/** A guard's stream, recording what it saw. */
function follow(url: string | ControlPlaneEndpoints, workload: WorkloadCredentials) {
  const events: { at: number; event: StreamEvent }[] = [];
  const revoked = new Map<string, number>();
  const stream = connectGuardStream({
    url,
    trustDomain: TD,
    tls: { cert: workload.chainPem, key: workload.keyPem, ca: workload.bundlePem },
    target: {
      setPolicyBundle: async () => ({}),
      setTrustBundle: () => {},
      lift: () => {},
      revoke: ({ value }) => void revoked.set(value, performance.now()),
    },
    onEvent: (event) => events.push({ at: performance.now(), event }),
  });
  opened.streams.push(stream);
  const count = (kind: StreamEvent['kind']) => events.filter(({ event }) => event.kind === kind).length;
  return { stream, events, revoked, count };
}

describe('PostgreSQL going away under the control plane', { skip: postgres.skip }, () => {
  it('reports a pooled connection the database ended, lives on, and reconnects on the next query', async () => {
    const schema = postgres.schema();
    const reported: Error[] = [];
    const store = await openPostgresStore({ connectionString: PG_URL, schema, onError: (e) => reported.push(e) });
    opened.stores.push(store);
    await store.revocationsSince(0); // leaves a connection idle in the pool
    const admin = new pg.Client({ connectionString: PG_URL });
    await admin.connect();
    try {
      // Only this store's pool: its connections carry application_name lockstep-<schema>.
      const { rows } = await admin.query<{ ended: boolean }>(
        `SELECT pg_terminate_backend(pid) AS ended FROM pg_stat_activity
          WHERE datname = current_database() AND pid <> pg_backend_pid() AND application_name = $1`,
        [`lockstep-${schema}`],
      );
      assert.ok(rows.length >= 1, 'the pool had a connection to end');
      assert.ok(rows.every((row) => row.ended));
    } finally {
      await admin.end();
    }
    await waitFor('the pool reports the ended connection', () => reported.length > 0, 5_000);
    assert.match(reported[0]?.message ?? '', /terminat/i);
    assert.deepEqual(await store.revocationsSince(0), [], 'the next query opens a new connection');
  });

  it('says so on stderr when no onError is given', async () => {
    const schema = postgres.schema();
    const store = await openPostgresStore({ connectionString: PG_URL, schema });
    opened.stores.push(store);
    await store.revocationsSince(0);
    const written: string[] = [];
    const write = process.stderr.write.bind(process.stderr);
    process.stderr.write = ((chunk: string | Uint8Array) => {
      written.push(String(chunk));
      return true;
    }) as typeof process.stderr.write;
    try {
      const admin = new pg.Client({ connectionString: PG_URL });
      await admin.connect();
      await admin
        .query('SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1', [
          `lockstep-${schema}`,
        ])
        .finally(() => admin.end());
      await waitFor('a line on stderr', () => written.some((line) => line.includes('lockstep store')), 5_000);
    } finally {
      process.stderr.write = write;
    }
    assert.match(written.join(''), /lockstep store: a pooled PostgreSQL connection failed \(.*\); the next query/);
    assert.deepEqual(await store.revocationsSince(0), []);
  });

  it('a replica cut off from the database sends its guards to another, and answers 503 LOCKSTEP_CP_STORE', async () => {
    const schema = postgres.schema();
    const ca = await openWorkloadCa({ trustDomain: TD, keyDir: join(scratch, 'keys') });
    const relay = await relayToPostgres();
    const storeA = await openPostgresStore({ connectionString: relay.url, schema, onError: () => {} });
    const storeB = await openPostgresStore({ connectionString: PG_URL, schema });
    opened.stores.push(storeA, storeB);
    const internalA: Error[] = [];
    const replicaA = await startControlPlane({ ca, store: storeA, onInternalError: (e) => internalA.push(e) });
    const replicaB = await startControlPlane({ ca, store: storeB });
    opened.servers.push(replicaA, replicaB);

    const { token } = await createJoinToken(storeB, ca, { service: 'orders', createdBy: 'test' });
    const orders = await joinControlPlane({ url: replicaB.url, trustDomain: TD, joinToken: token, service: 'orders' });
    const tls = { cert: orders.chainPem, key: orders.keyPem, ca: orders.bundlePem };
    const agent = controlPlaneAgent(TD, tls);
    const openStream = async (url: string) => {
      const response = await request(new URL('/v1/stream', url), { dispatcher: agent, headersTimeout: 5_000 });
      const type = String(response.headers['content-type']);
      const body = type.startsWith('application/json') ? ((await response.body.json()) as { error?: string }) : {};
      if (!type.startsWith('application/json')) await response.body.destroy();
      return { status: response.statusCode, error: body.error };
    };

    // A guard that knows only A, and one given [A, B] in that order: both on A.
    const onlyA = follow(replicaA.url, orders);
    const endpoints = controlPlaneEndpoints([replicaA.url, replicaB.url]);
    const both = follow(endpoints, orders);
    await waitFor(
      'both streams open on A',
      () => onlyA.count('connected') === 1 && both.count('connected') === 1,
      10_000,
    );
    assert.equal(endpoints.order()[0], replicaA.url);
    await replicaA.revoke({ kind: 'sub', value: 'before-the-cut', reason: 'test', actor: 'test' });
    await waitFor('A streams while it reads the database', () => onlyA.revoked.has('before-the-cut'), 2_000);

    await relay.cut();
    const cutAt = performance.now();

    // At once: a new stream's catch-up cannot be read, and that is an error answer, not an open stream.
    assert.deepEqual(await openStream(replicaA.url), { status: 503, error: 'LOCKSTEP_CP_STORE' });
    await assert.rejects(
      renewWithControlPlane({ url: replicaA.url, trustDomain: TD, current: orders, bundlePem: orders.bundlePem }),
      (error: { code?: string; status?: number }) => error.code === 'LOCKSTEP_CP_STORE' && error.status === 503,
    );

    // Within a few seconds, A ends the streams it has (no more pings saying all is well)…
    await waitFor('A ends its streams', () => onlyA.count('disconnected') >= 1, 8_000);
    const endedAfter = (onlyA.events.find(({ event }) => event.kind === 'disconnected')?.at ?? 0) - cutAt;
    console.log(
      `a replica cut off from the database ended its guard streams ${endedAfter.toFixed(0)} ms after the cut`,
    );
    assert.ok(endedAfter < 6_000, `took ${endedAfter.toFixed(0)} ms`);
    // …refuses new ones, without touching the database…
    assert.deepEqual(await openStream(replicaA.url), { status: 503, error: 'LOCKSTEP_CP_STORE' });
    await waitFor(
      'the guard that knows only A is told why',
      () =>
        onlyA.events.some(({ event }) => event.kind === 'disconnected' && event.reason.includes('LOCKSTEP_CP_STORE')),
      8_000,
    );
    // …and the guard given [A, B] is on B.
    await waitFor('the guard given [A, B] reconnects', () => both.count('connected') === 2, 5_000);
    assert.equal(endpoints.order()[0], replicaB.url);

    // A revocation made through B reaches it at once.
    const revokedAt = performance.now();
    await replicaB.revoke({ kind: 'sub', value: 'mallory', reason: 'test', actor: 'test' });
    await waitFor('the revocation through B arrives', () => both.revoked.has('mallory'), 2_000);
    const elapsed = (both.revoked.get('mallory') ?? Infinity) - revokedAt;
    console.log(`after the move, a revocation through B reached the guard in ${elapsed.toFixed(0)} ms`);
    assert.ok(elapsed < 1_000, `took ${elapsed.toFixed(0)} ms`);
    assert.ok(!onlyA.revoked.has('mallory'), 'A, cut off, cannot have served it');

    // A renewal still answers 503 from A; given both, it is served by B.
    await assert.rejects(
      renewWithControlPlane({ url: replicaA.url, trustDomain: TD, current: orders, bundlePem: orders.bundlePem }),
      (error: { code?: string; status?: number }) => error.code === 'LOCKSTEP_CP_STORE' && error.status === 503,
    );
    const renewed = await renewWithControlPlane({
      url: [replicaA.url, replicaB.url],
      trustDomain: TD,
      current: orders,
      bundlePem: orders.bundlePem,
    });
    assert.equal(renewed.spiffeId, orders.spiffeId);
    assert.ok(internalA.length > 0, "A reported the store's failures");
    await agent.close();
  });
});
