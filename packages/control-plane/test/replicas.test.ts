/**
 * Two control-plane replicas on one PostgreSQL store: a revocation made through one reaches a guard
 * connected to the other at once (LISTEN/NOTIFY), not at the next re-read. Needs PostgreSQL
 * (LOCKSTEP_TEST_PG, default postgres://postgres@127.0.0.1:5432/test); skipped with a message when it
 * is unreachable, a failure when LOCKSTEP_REQUIRE_PG=1 (CI).
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { testPostgres } from '@lockstep/testkit';
import {
  createJoinToken,
  openPostgresStore,
  openWorkloadCa,
  startControlPlane,
  type ControlPlaneStore,
  type RunningControlPlane,
} from '../src/index.ts';
import { connectGuardStream, joinControlPlane } from '@lockstep/workload';

const postgres = await testPostgres();
const PG_URL = postgres.url;

const scratch = mkdtempSync(join(tmpdir(), 'lockstep-replicas-'));
const schema = postgres.schema();
const opened: { stores: ControlPlaneStore[]; servers: RunningControlPlane[] } = { stores: [], servers: [] };

after(async () => {
  for (const server of opened.servers) await server.close();
  for (const store of opened.stores) await store.close();
  rmSync(scratch, { recursive: true, force: true });
  await postgres.cleanup();
});

describe('control-plane replicas on PostgreSQL', { skip: postgres.skip }, () => {
  it('push a revocation made through one replica to a guard on the other within a fraction of a second', async () => {
    const ca = await openWorkloadCa({ trustDomain: 'shop.test', keyDir: join(scratch, 'keys') });
    const [storeA, storeB] = [
      await openPostgresStore({ connectionString: PG_URL, schema }),
      await openPostgresStore({ connectionString: PG_URL, schema }),
    ];
    opened.stores.push(storeA, storeB);
    // The streams' own re-read is pushed out of the way: only the notification can deliver in time.
    const [replicaA, replicaB] = [
      await startControlPlane({ ca, store: storeA, rereadMs: 60_000 }),
      await startControlPlane({ ca, store: storeB, rereadMs: 60_000 }),
    ];
    opened.servers.push(replicaA, replicaB);

    const { token } = await createJoinToken(storeA, ca, { service: 'orders', createdBy: 'test' });
    const orders = await joinControlPlane({
      url: replicaB.url,
      trustDomain: 'shop.test',
      joinToken: token,
      service: 'orders',
    });
    let connected!: () => void;
    const ready = new Promise<void>((resolve) => {
      connected = resolve;
    });
    let received!: (at: number) => void;
    const arrival = new Promise<number>((resolve) => {
      received = resolve;
    });
    const stream = connectGuardStream({
      url: replicaB.url,
      trustDomain: 'shop.test',
      tls: { cert: orders.chainPem, key: orders.keyPem, ca: orders.bundlePem },
      target: {
        setPolicyBundle: async () => ({}),
        setTrustBundle: () => {},
        lift: () => {},
        revoke: (revocation) => {
          if (revocation.value === 'mallory') received(performance.now());
        },
      },
      onEvent: (event) => {
        if (event.kind === 'connected') connected();
      },
    });
    try {
      await ready;
      await new Promise((resolve) => setTimeout(resolve, 100));
      const revokedAt = performance.now();
      await replicaA.revoke({ kind: 'sub', value: 'mallory', reason: 'test', actor: 'test' });
      const elapsed =
        (await Promise.race([
          arrival,
          new Promise<number>((_, reject) =>
            setTimeout(() => reject(new Error('the notification never arrived')), 5_000),
          ),
        ])) - revokedAt;
      console.log(`revocation through replica A reached a guard on replica B in ${elapsed.toFixed(0)} ms`);
      assert.ok(elapsed < 1_000, `took ${elapsed.toFixed(0)} ms`);
    } finally {
      await stream.close();
    }
  });
});
