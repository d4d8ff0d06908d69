/**
 * One contract, two stores: every test runs against SQLite and PostgreSQL. PostgreSQL is found at
 * LOCKSTEP_TEST_PG (default postgres://postgres@127.0.0.1:5432/test); each run works in a schema of its own
 * and drops it. Without PostgreSQL its half is skipped with a message, unless LOCKSTEP_REQUIRE_PG=1
 * (CI), where it fails.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import pg from 'pg';
import { openPostgresStore } from './postgres-store.ts';
import { openSqliteStore } from './sqlite-store.ts';
import type { ControlPlaneStore } from './store.ts';

const PG_URL = process.env.LOCKSTEP_TEST_PG ?? 'postgres://postgres@127.0.0.1:5432/test';
const requirePg = process.env.LOCKSTEP_REQUIRE_PG === '1';

async function postgresReachable(): Promise<string | null> {
  const client = new pg.Client({ connectionString: PG_URL, connectionTimeoutMillis: 2_000 });
  try {
    await client.connect();
    await client.query('SELECT 1');
    return null;
  } catch (error) {
    return (error as Error).message;
  } finally {
    await client.end().catch(() => {});
  }
}

const pgProblem = await postgresReachable();
if (pgProblem !== null && requirePg) throw new Error(`LOCKSTEP_REQUIRE_PG=1 but PostgreSQL is not reachable at ${PG_URL}: ${pgProblem}. Start it (pg_ctlcluster <version> main start) or set LOCKSTEP_TEST_PG.`);

const scratch = mkdtempSync(join(tmpdir(), 'lockstep-store-'));
const schemas: string[] = [];
after(async () => {
  rmSync(scratch, { recursive: true, force: true });
  if (schemas.length === 0) return;
  const client = new pg.Client({ connectionString: PG_URL });
  await client.connect();
  for (const schema of schemas) await client.query(`DROP SCHEMA IF EXISTS ${schema} CASCADE`);
  await client.end();
});

/** `open(database)` opens the same database again for the same name, a fresh one for a new name. */
const backends: { name: string; skip: string | false; open(database?: string): Promise<ControlPlaneStore> }[] = [
  { name: 'sqlite', skip: false, open: async (database = randomBytes(6).toString('hex')) => openSqliteStore(join(scratch, `${database}.db`)) },
  {
    name: 'postgres',
    skip: pgProblem === null ? false : `PostgreSQL not reachable at ${PG_URL} (${pgProblem}); CI requires it (LOCKSTEP_REQUIRE_PG=1)`,
    async open(database = randomBytes(6).toString('hex')) {
      const schema = `lockstep_test_${database}`;
      if (!schemas.includes(schema)) schemas.push(schema);
      return openPostgresStore({ connectionString: PG_URL, schema });
    },
  },
];

const HOUR = 3_600_000;
const token = (overrides: Partial<{ tokenHash: string; service: string; expiresAt: number }> = {}) => ({
  tokenHash: overrides.tokenHash ?? randomBytes(32).toString('hex'),
  service: overrides.service ?? 'orders',
  bundleHash: 'bundle-hash',
  createdAt: 1_000,
  expiresAt: overrides.expiresAt ?? 1_000 + HOUR,
  createdBy: 'spiffe://shop.test/admin/alice',
});

for (const backend of backends) {
  describe(`store contract: ${backend.name}`, { skip: backend.skip }, () => {
    const withStore = (body: (store: ControlPlaneStore) => Promise<void>) => async () => {
      const store = await backend.open();
      try {
        await body(store);
      } finally {
        await store.close();
      }
    };

    it('redeems a join token exactly once and says why a second redemption fails', withStore(async (store) => {
      const record = token();
      await store.createJoinToken(record);
      const first = await store.redeemJoinToken(record.tokenHash, 2_000);
      assert.equal(first.ok, true);
      assert.deepEqual(first.ok && first.record, { ...record, usedAt: 2_000 });
      assert.deepEqual(await store.redeemJoinToken(record.tokenHash, 3_000), { ok: false, reason: 'used' });
    }));

    it('refuses unknown and expired join tokens, and an expired one stays unused', withStore(async (store) => {
      const record = token({ expiresAt: 5_000 });
      await store.createJoinToken(record);
      assert.deepEqual(await store.redeemJoinToken('0'.repeat(64), 2_000), { ok: false, reason: 'unknown' });
      assert.deepEqual(await store.redeemJoinToken(record.tokenHash, 5_000), { ok: false, reason: 'expired' });
      assert.deepEqual(await store.redeemJoinToken(record.tokenHash, 9_000), { ok: false, reason: 'expired' });
    }));

    it('lets exactly one of many concurrent redemptions of one token succeed', withStore(async (store) => {
      const record = token();
      await store.createJoinToken(record);
      const outcomes = await Promise.all(Array.from({ length: 8 }, () => store.redeemJoinToken(record.tokenHash, 2_000)));
      assert.equal(outcomes.filter((outcome) => outcome.ok).length, 1);
    }));

    it('refuses a second join token with the same hash', withStore(async (store) => {
      const record = token();
      await store.createJoinToken(record);
      await assert.rejects(store.createJoinToken(record));
    }));

    it('records issued SVIDs per SPIFFE ID', withStore(async (store) => {
      const id = 'spiffe://shop.test/svc/orders';
      await store.recordIssuedSvid({ serial: '01', spiffeId: id, issuedAt: 1, expiresAt: 2, via: 'join' });
      await store.recordIssuedSvid({ serial: '02', spiffeId: id, issuedAt: 3, expiresAt: 4, via: 'renew' });
      await store.recordIssuedSvid({ serial: '03', spiffeId: 'spiffe://shop.test/svc/other', issuedAt: 3, expiresAt: 4, via: 'join' });
      assert.deepEqual((await store.issuedSvids(id)).map((svid) => [svid.serial, svid.via]), [['01', 'join'], ['02', 'renew']]);
      await assert.rejects(store.recordIssuedSvid({ serial: '01', spiffeId: id, issuedAt: 5, expiresAt: 6, via: 'renew' }), 'a serial is unique');
    }));

    it('keeps revocations as an ordered feed that a guard can resume, each revocation once', withStore(async (store) => {
      const first = await store.addRevocation({ kind: 'sub', value: 'mallory', reason: 'compromised', actor: 'spiffe://shop.test/admin/alice', at: 10 });
      const second = await store.addRevocation({ kind: 'spiffeId', value: 'spiffe://shop.test/svc/orders', reason: 'stolen key', actor: 'cli', at: 11 });
      const again = await store.addRevocation({ kind: 'sub', value: 'mallory', reason: 'again', actor: 'cli', at: 12 });
      assert.ok(second.seq > first.seq);
      assert.deepEqual(again, first, 'revoking twice returns the first entry');
      assert.deepEqual(await store.revocationsSince(0), [first, second]);
      assert.deepEqual(await store.revocationsSince(first.seq), [second]);
      assert.deepEqual(await store.revocationsSince(second.seq), []);
      assert.equal(await store.isRevoked('sub', 'mallory'), true);
      assert.equal(await store.isRevoked('txn', 'mallory'), false);
    }));

    it('registers a guard on its first heartbeat and updates it on the next, keeping when it was first seen', withStore(async (store) => {
      const report = {
        spiffeId: 'spiffe://shop.test/svc/orders', service: 'orders', policyVersion: 'v1', svidExpiresAt: 9_000, mode: 'enforce' as const, guardVersion: '0.1.0', lastSeen: 100,
        routes: [{ method: 'GET', template: '/orders/:id', action: 'orders:read', public: false, dryRun: false }],
      };
      await store.recordHeartbeat(report);
      await store.recordHeartbeat({ ...report, policyVersion: 'v2', mode: 'dry-run', lastSeen: 200 });
      await store.recordHeartbeat({ ...report, spiffeId: 'spiffe://shop.test/svc/billing', service: 'billing', policyVersion: null, routes: [], lastSeen: 150 });
      const services = await store.services();
      assert.deepEqual(services.map((entry) => entry.service), ['billing', 'orders']);
      assert.deepEqual(services[1], { ...report, policyVersion: 'v2', mode: 'dry-run', firstSeen: 100, lastSeen: 200 });
      assert.equal(services[0]?.policyVersion, null);
    }));

    it('keeps its data across a restart, migrating only once', async () => {
      const database = randomBytes(6).toString('hex');
      const store = await backend.open(database);
      await store.addRevocation({ kind: 'kid', value: 'k1', reason: 'rotated out early', actor: 'cli', at: 1 });
      await store.close();
      const reopened = await backend.open(database);
      try {
        assert.equal(await reopened.isRevoked('kid', 'k1'), true);
      } finally {
        await reopened.close();
      }
    });
  });
}

describe('sqlite store files', () => {
  it('are readable by their owner only, in a directory only the owner can enter', async () => {
    const directory = join(scratch, 'private', 'state');
    const path = join(directory, 'control-plane.db');
    const store = openSqliteStore(path);
    try {
      assert.equal(statSync(path).mode & 0o777, 0o600);
      assert.equal(statSync(directory).mode & 0o777, 0o700);
    } finally {
      await store.close();
    }
  });
});
