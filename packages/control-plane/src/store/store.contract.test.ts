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
import { testPostgres } from '@lockstep/testkit';
import { openPostgresStore } from './postgres-store.ts';
import { openSqliteStore } from './sqlite-store.ts';
import {
  KEY_DOCUMENT_GENERATIONS_KEPT,
  type ControlPlaneStore,
  type SealedDocument,
  type SharedPolicySet,
} from './store.ts';
import { auditEventHash, GENESIS } from './audit-chain.ts';
import { MIGRATIONS } from './migrations.ts';

const postgres = await testPostgres();
const PG_URL = postgres.url;
const pgProblem = postgres.problem;

const scratch = mkdtempSync(join(tmpdir(), 'lockstep-store-'));
after(async () => {
  rmSync(scratch, { recursive: true, force: true });
  await postgres.cleanup();
});

const schemaFor: Record<string, string> = {};

/** `open(database)` opens the same database again for the same name, a fresh one for a new name. */
const backends: { name: string; skip: string | false; open(database?: string): Promise<ControlPlaneStore> }[] = [
  {
    name: 'sqlite',
    skip: false,
    open: async (database = randomBytes(6).toString('hex')) => openSqliteStore(join(scratch, `${database}.db`)),
  },
  {
    name: 'postgres',
    skip: postgres.skip,
    async open(database = randomBytes(6).toString('hex')) {
      // The same name opens the same database again (restart test): one schema per name.
      schemaFor[database] ??= postgres.schema();
      return openPostgresStore({ connectionString: PG_URL, schema: schemaFor[database] });
    },
  },
];

const HOUR = 3_600_000;
/** A key document as the store sees it: opaque text (ca/sealed.ts makes real ones). */
const keyDocument = (name: string, generation: number, sealed = `${name}@${generation}`): SealedDocument => ({
  name,
  generation,
  kekId: 'k1',
  wrappedDek: `dek-${sealed}`,
  sealed,
});
/**
 * A shared policy set as the store sees it: opaque texts under a version, and an opaque signature (the policy
 * service makes real ones).
 */
const policySet = (version: string, appliedBy = 'replica-a:/etc/lockstep/policies'): SharedPolicySet => ({
  version,
  sources: { 'shop.cedarschema': `// schema of ${version}`, 'orders.cedar': `// policies of ${version}: é ✓ "quoted"` },
  appliedAt: 1_000,
  appliedBy,
  signature: `jws of ${version} by ${appliedBy}`,
});
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

    it(
      'redeems a join token exactly once and says why a second redemption fails',
      withStore(async (store) => {
        const record = token();
        await store.createJoinToken(record);
        const first = await store.redeemJoinToken(record.tokenHash, 2_000);
        assert.equal(first.ok, true);
        assert.deepEqual(first.ok && first.record, { ...record, usedAt: 2_000 });
        assert.deepEqual(await store.redeemJoinToken(record.tokenHash, 3_000), { ok: false, reason: 'used' });
      }),
    );

    it(
      'refuses unknown and expired join tokens, and an expired one stays unused',
      withStore(async (store) => {
        const record = token({ expiresAt: 5_000 });
        await store.createJoinToken(record);
        assert.deepEqual(await store.redeemJoinToken('0'.repeat(64), 2_000), { ok: false, reason: 'unknown' });
        assert.deepEqual(await store.redeemJoinToken(record.tokenHash, 5_000), { ok: false, reason: 'expired' });
        assert.deepEqual(await store.redeemJoinToken(record.tokenHash, 9_000), { ok: false, reason: 'expired' });
      }),
    );

    it(
      'lets exactly one of many concurrent redemptions of one token succeed',
      withStore(async (store) => {
        const record = token();
        await store.createJoinToken(record);
        const outcomes = await Promise.all(
          Array.from({ length: 8 }, () => store.redeemJoinToken(record.tokenHash, 2_000)),
        );
        assert.equal(outcomes.filter((outcome) => outcome.ok).length, 1);
      }),
    );

    it(
      'refuses a second join token with the same hash',
      withStore(async (store) => {
        const record = token();
        await store.createJoinToken(record);
        await assert.rejects(store.createJoinToken(record));
      }),
    );

    it(
      'records issued SVIDs per SPIFFE ID',
      withStore(async (store) => {
        const id = 'spiffe://shop.test/svc/orders';
        await store.recordIssuedSvid({ serial: '01', spiffeId: id, issuedAt: 1, expiresAt: 2, via: 'join' });
        await store.recordIssuedSvid({ serial: '02', spiffeId: id, issuedAt: 3, expiresAt: 4, via: 'renew' });
        await store.recordIssuedSvid({
          serial: '03',
          spiffeId: 'spiffe://shop.test/svc/other',
          issuedAt: 3,
          expiresAt: 4,
          via: 'join',
        });
        assert.deepEqual(
          (await store.issuedSvids(id)).map((svid) => [svid.serial, svid.via]),
          [
            ['01', 'join'],
            ['02', 'renew'],
          ],
        );
        await assert.rejects(
          store.recordIssuedSvid({ serial: '01', spiffeId: id, issuedAt: 5, expiresAt: 6, via: 'renew' }),
          'a serial is unique',
        );
      }),
    );

    it(
      'spends an SVID once: of two spends at once, one wins and the other reads the winner',
      withStore(async (store) => {
        const id = 'spiffe://shop.test/svc/orders';
        await store.recordIssuedSvid({ serial: 'a1', spiffeId: id, issuedAt: 1, expiresAt: 2, via: 'recover' });
        assert.deepEqual(
          (await store.issuedSvids(id)).map((svid) => svid.via),
          ['recover'],
        );
        const outcomes = await Promise.all([
          store.spendSvid({ serial: 'a1', successor: 'b1', successorKey: 'k1', at: 10, via: 'recover' }),
          store.spendSvid({ serial: 'a1', successor: 'b2', successorKey: 'k2', at: 11, via: 'recover' }),
        ]);
        assert.equal(outcomes.filter((outcome) => outcome === null).length, 1, 'one spend wins');
        const loser = outcomes.find((outcome) => outcome !== null);
        assert.equal(loser?.serial, 'a1');
        assert.ok(loser?.successor === 'b1' || loser?.successor === 'b2');
        assert.equal(loser.successorKey, loser.successor === 'b1' ? 'k1' : 'k2');
        assert.deepEqual(await store.svidSuccession('a1'), loser);
        assert.deepEqual(
          await store.spendSvid({ serial: 'a1', successor: 'b3', successorKey: 'k3', at: 12, via: 'renew' }),
          loser,
        );
        assert.equal(
          await store.spendSvid({ serial: 'a2', successor: 'b4', successorKey: 'k4', at: 13, via: 'renew' }),
          null,
        );
        assert.equal(await store.svidSuccession('a3'), null, 'unspent');
      }),
    );

    it(
      'spends an SVID again for the same successor key (a retry after a lost answer): the successor moves, nothing else',
      withStore(async (store) => {
        assert.equal(
          await store.spendSvid({ serial: 'c1', successor: 'd1', successorKey: 'k1', at: 10, via: 'renew' }),
          null,
        );
        assert.equal(
          await store.spendSvid({ serial: 'c1', successor: 'd2', successorKey: 'k1', at: 20, via: 'recover' }),
          null,
          'the same key: served again',
        );
        assert.deepEqual(await store.svidSuccession('c1'), {
          serial: 'c1',
          successor: 'd2',
          successorKey: 'k1',
          at: 10,
          via: 'renew',
        });
        const other = await store.spendSvid({
          serial: 'c1',
          successor: 'd3',
          successorKey: 'k9',
          at: 30,
          via: 'recover',
        });
        assert.equal(other?.successor, 'd2', 'another key: the succession recorded before');
      }),
    );

    it(
      'retires an SVID (no successor, no key): nothing spends it again, not even without a key',
      withStore(async (store) => {
        const retired = { serial: 'e1', successor: '', successorKey: null, at: 10, via: 'retire' as const };
        assert.equal(await store.spendSvid(retired), null);
        assert.deepEqual(await store.svidSuccession('e1'), retired);
        assert.deepEqual(await store.spendSvid({ ...retired, at: 11 }), retired, 'a second retirement changes nothing');
        assert.deepEqual(
          await store.spendSvid({ serial: 'e1', successor: 'f1', successorKey: 'k1', at: 12, via: 'renew' }),
          retired,
        );
        // A spend from before successor keys were recorded has none: a key never matches it.
        assert.equal(
          await store.spendSvid({ serial: 'e2', successor: 'f2', successorKey: null, at: 13, via: 'renew' }),
          null,
        );
        assert.equal(
          (await store.spendSvid({ serial: 'e2', successor: 'f3', successorKey: null, at: 14, via: 'recover' }))
            ?.successor,
          'f2',
        );
      }),
    );

    it(
      'keeps revocations as an ordered feed that a guard can resume, each revocation once',
      withStore(async (store) => {
        const first = await store.addRevocation({
          kind: 'sub',
          value: 'mallory',
          reason: 'compromised',
          actor: 'spiffe://shop.test/admin/alice',
          at: 10,
        });
        const second = await store.addRevocation({
          kind: 'spiffeId',
          value: 'spiffe://shop.test/svc/orders',
          reason: 'stolen key',
          actor: 'cli',
          at: 11,
        });
        const again = await store.addRevocation({
          kind: 'sub',
          value: 'mallory',
          reason: 'again',
          actor: 'cli',
          at: 12,
        });
        assert.ok(second.seq > first.seq);
        assert.deepEqual(again, first, 'revoking twice returns the first entry');
        assert.deepEqual(await store.revocationsSince(0), [first, second]);
        assert.deepEqual(await store.revocationsSince(first.seq), [second]);
        assert.deepEqual(await store.revocationsSince(second.seq), []);
        assert.equal(await store.isRevoked('sub', 'mallory'), true);
        assert.equal(await store.isRevoked('txn', 'mallory'), false);
      }),
    );

    it(
      'lifts a revocation that holds, once, at a new feed position that a guard resuming from before hears of',
      withStore(async (store) => {
        const revoked = await store.addRevocation({
          kind: 'sub',
          value: 'alice',
          reason: 'typo: meant mallory',
          actor: 'spiffe://shop.test/admin/ops',
          at: 10,
        });
        const other = await store.addRevocation({
          kind: 'sub',
          value: 'mallory',
          reason: 'compromised',
          actor: 'spiffe://shop.test/admin/ops',
          at: 11,
        });
        const lift = { reason: 'revoked by mistake', actor: 'spiffe://shop.test/admin/ops', at: 12 };
        const lifted = await store.liftRevocation('sub', 'alice', lift);
        assert.ok(lifted !== null);
        assert.ok(lifted.seq > other.seq, 'the lift is at the end of the feed');
        assert.deepEqual(
          { ...lifted, seq: revoked.seq },
          { ...revoked, lifted: lift },
          'the entry keeps what was revoked, and says who lifted it',
        );
        assert.equal(await store.isRevoked('sub', 'alice'), false);
        assert.equal(await store.isRevoked('sub', 'mallory'), true);
        assert.deepEqual(await store.revocation('sub', 'alice'), lifted, 'a lifted entry is still read, as lifted');
        assert.deepEqual(await store.revocation('sub', 'mallory'), other);
        assert.equal(await store.revocation('sub', 'nobody'), null, 'never revoked');
        // A guard that saw the revocation, and one that starts from nothing, both end with alice accepted.
        assert.deepEqual(await store.revocationsSince(revoked.seq), [other, lifted]);
        assert.deepEqual(
          await store.revocationsSince(0),
          [other, lifted],
          'the revocation itself is no longer in the feed to replay',
        );
        assert.equal(await store.liftRevocation('sub', 'alice', lift), null, 'lifted already: nothing holds');
        assert.equal(await store.liftRevocation('txn', 'alice', lift), null, 'another kind: nothing holds');
        assert.equal(await store.liftRevocation('sub', 'nobody', lift), null, 'never revoked');
        // Revoked again, it holds again, at a newer position still.
        const again = await store.addRevocation({
          kind: 'sub',
          value: 'alice',
          reason: 'now for real',
          actor: 'cli',
          at: 13,
        });
        assert.ok(again.seq > lifted.seq);
        assert.equal(again.lifted, null);
        assert.equal(again.reason, 'now for real');
        assert.equal(await store.isRevoked('sub', 'alice'), true);
        assert.deepEqual(await store.revocationsSince(lifted.seq), [again]);
        assert.deepEqual(await store.revocation('sub', 'alice'), again, 'the latest revocation');
      }),
    );

    it(
      'lets exactly one of two simultaneous lifts of one revocation succeed',
      withStore(async (store) => {
        await store.addRevocation({ kind: 'kid', value: 'k1', reason: 'test', actor: 'cli', at: 1 });
        const lift = { reason: 'mistake', actor: 'cli', at: 2 };
        const results = await Promise.all([
          store.liftRevocation('kid', 'k1', lift),
          store.liftRevocation('kid', 'k1', lift),
        ]);
        assert.equal(results.filter((result) => result !== null).length, 1);
      }),
    );

    it(
      'registers a guard on its first heartbeat and updates it on the next, keeping when it was first seen',
      withStore(async (store) => {
        const report = {
          spiffeId: 'spiffe://shop.test/svc/orders',
          service: 'orders',
          policyVersion: 'v1',
          svidExpiresAt: 9_000,
          mode: 'enforce' as const,
          guardVersion: '0.1.0',
          lastSeen: 100,
          routes: [
            {
              method: 'GET',
              template: '/orders/:id',
              action: 'orders:read',
              public: false,
              dryRun: false,
              owner: true,
              validatesBody: false,
            },
          ],
          endpoints: ['127.0.0.1:4102', '[::1]:4102'],
        };
        await store.recordHeartbeat(report);
        await store.recordHeartbeat({ ...report, policyVersion: 'v2', mode: 'dry-run', lastSeen: 200 });
        await store.recordHeartbeat({
          ...report,
          spiffeId: 'spiffe://shop.test/svc/billing',
          service: 'billing',
          policyVersion: null,
          routes: [],
          lastSeen: 150,
          endpoints: [],
        });
        const services = await store.services();
        assert.deepEqual(
          services.map((entry) => entry.service),
          ['billing', 'orders'],
        );
        assert.deepEqual(services[1], {
          ...report,
          policyVersion: 'v2',
          mode: 'dry-run',
          firstSeen: 100,
          lastSeen: 200,
        });
        assert.equal(services[0]?.policyVersion, null);
        assert.equal(
          await store.removeService('spiffe://shop.test/svc/billing'),
          true,
          'a clean stop removes the entry',
        );
        assert.equal(await store.removeService('spiffe://shop.test/svc/billing'), false, 'once');
        assert.deepEqual(
          (await store.services()).map((entry) => entry.service),
          ['orders'],
        );
      }),
    );

    it(
      'keeps users: a name once, password hash replaceable, disabling reversible',
      withStore(async (store) => {
        const alice = {
          username: 'alice',
          passwordHash: 'scrypt$hash-1',
          roles: ['customer'],
          tenant: 'acme',
          createdAt: 5,
          disabledAt: null,
        };
        assert.equal(await store.createUser(alice), true);
        assert.equal(
          await store.createUser({ ...alice, passwordHash: 'scrypt$other' }),
          false,
          'a taken name is refused',
        );
        assert.deepEqual(await store.user('alice'), alice);
        assert.equal(await store.user('bob'), null);
        await store.setPasswordHash('alice', 'scrypt$hash-2');
        await store.setUserDisabled('alice', 9);
        assert.deepEqual(await store.user('alice'), { ...alice, passwordHash: 'scrypt$hash-2', disabledAt: 9 });
        await store.setUserDisabled('alice', null);
        await store.createUser({ ...alice, username: 'admin', roles: ['admin'], tenant: null });
        assert.deepEqual(
          (await store.users()).map((user) => [user.username, user.disabledAt, user.tenant]),
          [
            ['admin', null, null],
            ['alice', null, 'acme'],
          ],
        );
      }),
    );

    it(
      'counts failed logins per key atomically, starting again after the window',
      withStore(async (store) => {
        const counts = await Promise.all(
          Array.from({ length: 6 }, () => store.addLoginFailure('account:alice', 1_000, 60_000)),
        );
        assert.deepEqual(
          counts.map((count) => count.failures).sort((a, b) => a - b),
          [1, 2, 3, 4, 5, 6],
        );
        assert.deepEqual(await store.loginFailures('account:alice'), { failures: 6, lastFailureAt: 1_000 });
        assert.deepEqual(
          await store.addLoginFailure('account:alice', 50_000, 60_000),
          { failures: 7, lastFailureAt: 50_000 },
          'within the window of the last failure',
        );
        assert.deepEqual(
          await store.addLoginFailure('account:alice', 200_000, 60_000),
          { failures: 1, lastFailureAt: 200_000 },
          'after a quiet window',
        );
        assert.equal(await store.clearLoginFailures('account:alice'), true);
        assert.equal(await store.loginFailures('account:alice'), null);
        assert.equal(await store.clearLoginFailures('account:alice'), false, 'nothing left to clear');
        assert.equal(await store.loginFailures('ip:127.0.0.1'), null);
      }),
    );

    it(
      'reserves login attempts atomically: parallel callers never get past the limit, a locked key is left alone; sweeps old counts',
      withStore(async (store) => {
        const limits = { freeAttempts: 3, baseLockMs: 1_000, maxLockMs: 4_000, windowMs: 60_000 };
        const bob = [{ key: 'account:bob', limits }];
        const parallel = await Promise.all(Array.from({ length: 25 }, () => store.reserveLoginAttempt(bob, 10_000)));
        assert.equal(
          parallel.filter((reservation) => reservation.reserved).length,
          3,
          'three free attempts, then locked',
        );
        assert.deepEqual(
          await store.loginFailures('account:bob'),
          { failures: 3, lastFailureAt: 10_000 },
          'refused attempts count nothing',
        );
        assert.deepEqual(await store.reserveLoginAttempt(bob, 10_999), {
          reserved: false,
          lockedClaim: 0,
          lockedUntil: 11_000,
        });
        // The lock after n failures lasts baseLockMs * 2^(n - freeAttempts), up to maxLockMs (login-lock.ts's lockFor).
        const timeline: [number, boolean][] = [
          [11_000, true],
          [12_999, false],
          [13_000, true],
          [16_999, false],
          [17_000, true],
          [20_999, false],
          [21_000, true],
        ];
        for (const [at, reserved] of timeline)
          assert.equal((await store.reserveLoginAttempt(bob, at)).reserved, reserved, `at ${at}`);
        assert.deepEqual(
          await store.reserveLoginAttempt(bob, 90_000),
          { reserved: true, counts: [{ failures: 1, lastFailureAt: 90_000 }] },
          'after a quiet window',
        );
        await store.forgiveLoginFailure('account:bob');
        await store.forgiveLoginFailure('account:bob');
        assert.deepEqual(
          await store.loginFailures('account:bob'),
          { failures: 0, lastFailureAt: 90_000 },
          'never below 0',
        );
        await store.forgiveLoginFailure('account:nobody');
        assert.equal(await store.loginFailures('account:nobody'), null);
        await store.addLoginFailure('address:10.0.0.1', 95_000, 60_000);
        assert.equal(await store.sweepLoginFailures(91_000), 1, 'only the count last touched before then');
        assert.equal(await store.loginFailures('account:bob'), null);
        assert.notEqual(await store.loginFailures('address:10.0.0.1'), null);
      }),
    );

    it(
      'reserves a login attempt under several counts all or nothing: a locked one writes nothing anywhere, no row either',
      withStore(async (store) => {
        const account = {
          key: 'account:carol',
          limits: { freeAttempts: 5, baseLockMs: 1_000, maxLockMs: 60_000, windowMs: 60_000 },
        };
        const pair = {
          key: 'address-account:10.0.0.1 carol',
          limits: { freeAttempts: 1, baseLockMs: 30_000, maxLockMs: 30_000, windowMs: 60_000 },
        };
        const counted = { key: 'address:10.0.0.1', limits: { ...pair.limits, freeAttempts: Number.POSITIVE_INFINITY } };
        const parallel = await Promise.all(
          Array.from({ length: 25 }, () => store.reserveLoginAttempt([account, pair, counted], 1_000)),
        );
        assert.equal(
          parallel.filter((reservation) => reservation.reserved).length,
          1,
          'the strictest claim decides, in parallel as in sequence',
        );
        assert.deepEqual(
          parallel.find((reservation) => reservation.reserved),
          { reserved: true, counts: [1, 1, 1].map((failures) => ({ failures, lastFailureAt: 1_000 })) },
        );
        assert.deepEqual(
          parallel.find((reservation) => !reservation.reserved),
          { reserved: false, lockedClaim: 1, lockedUntil: 31_000 },
        );
        assert.deepEqual(
          await store.loginFailures(account.key),
          { failures: 1, lastFailureAt: 1_000 },
          'the held ones counted nothing under the other claims',
        );
        const fresh = { key: 'account:dave', limits: account.limits };
        assert.equal((await store.reserveLoginAttempt([fresh, pair], 2_000)).reserved, false);
        assert.equal(await store.loginFailures(fresh.key), null, 'no row for a claim of a held attempt');
        assert.equal(
          (await store.reserveLoginAttempt([fresh, counted], 2_000)).reserved,
          true,
          'a count without a limit never holds',
        );
        assert.equal((await store.reserveLoginAttempt([pair], 31_000)).reserved, true, 'the lock ends');
      }),
    );

    it(
      'keeps identity-provider artefacts: upsert, lookups by uid and user code, consumption, grant revocation, sweeping',
      withStore(async (store) => {
        const session = {
          model: 'Session',
          id: 's1',
          payload: '{"uid":"u1"}',
          grantId: null,
          userCode: null,
          uid: 'u1',
          expiresAt: 10_000,
        };
        const refresh = {
          model: 'RefreshToken',
          id: 'r1',
          payload: '{"a":1}',
          grantId: 'g1',
          userCode: null,
          uid: null,
          expiresAt: 20_000,
        };
        const code = {
          model: 'AuthorizationCode',
          id: 'c1',
          payload: '{}',
          grantId: 'g1',
          userCode: null,
          uid: null,
          expiresAt: 500,
        };
        const device = {
          model: 'DeviceCode',
          id: 'd1',
          payload: '{}',
          grantId: 'g2',
          userCode: 'ABCD-EFGH',
          uid: null,
          expiresAt: null,
        };
        for (const artefact of [session, refresh, code, device]) await store.upsertOidc(artefact);
        await store.upsertOidc({ ...refresh, payload: '{"a":2}' });
        assert.deepEqual(await store.findOidc('RefreshToken', 'r1'), {
          ...refresh,
          payload: '{"a":2}',
          consumedAt: null,
        });
        assert.equal(await store.findOidc('Session', 'r1'), null, 'ids are per model');
        assert.equal((await store.findOidcBy('Session', 'uid', 'u1'))?.id, 's1');
        assert.equal((await store.findOidcBy('DeviceCode', 'userCode', 'ABCD-EFGH'))?.id, 'd1');
        await store.consumeOidc('RefreshToken', 'r1', 1_234);
        await store.upsertOidc({ ...refresh, payload: '{"a":3}' });
        assert.equal(
          (await store.findOidc('RefreshToken', 'r1'))?.consumedAt,
          1_234,
          'an update does not undo consumption',
        );
        assert.equal(await store.sweepOidc(1_000), 1, 'only the expired code');
        await store.revokeOidcGrant('g1');
        assert.equal(await store.findOidc('RefreshToken', 'r1'), null);
        await store.destroyOidc('Session', 's1');
        assert.equal(await store.findOidc('Session', 's1'), null);
        assert.notEqual(await store.findOidc('DeviceCode', 'd1'), null, 'another grant is untouched');
      }),
    );

    const entry = (_stream: string, streamSeq: number, txn: string | null = null) => ({
      streamSeq,
      event: JSON.stringify({ service: 'orders', streamSeq, txn }),
    });

    it(
      "chains a source's audit events, skips a retried batch, and counts the positions a stream skipped",
      withStore(async (store) => {
        const source = 'spiffe://shop.test/svc/orders';
        const first = await store.appendAudit(
          source,
          { stream: 's1', dropped: 0, entries: [entry('s1', 1, 't1'), entry('s1', 2, 't1')] },
          100,
        );
        assert.deepEqual([first.accepted, first.duplicates, first.head.seq, first.gaps], [2, 0, 2, []]);
        const retried = await store.appendAudit(
          source,
          { stream: 's1', dropped: 0, entries: [entry('s1', 2, 't1'), entry('s1', 3)] },
          200,
        );
        assert.deepEqual([retried.accepted, retried.duplicates, retried.head.seq], [1, 1, 3]);
        const skipped = await store.appendAudit(source, { stream: 's1', dropped: 4, entries: [entry('s1', 7)] }, 300);
        assert.deepEqual(skipped.gaps, [[4, 6]]);
        await store.appendAudit(
          'spiffe://shop.test/svc/payments',
          { stream: 'p1', dropped: 0, entries: [entry('p1', 1, 't1')] },
          400,
        );

        const events = await store.auditEvents(source, 0, 100);
        assert.deepEqual(
          events.map((event) => [event.seq, event.streamSeq]),
          [
            [1, 1],
            [2, 2],
            [3, 3],
            [4, 7],
          ],
        );
        assert.equal(events[0]?.prevHash, GENESIS);
        // Known answers (audit-chain.test.ts says how they were computed): the store hashes what it stores.
        const known = [
          '5cd4fb8c0232f2e888bcbe6fb8a661fa3b9bbc571d627b252fa85d7f81b695df',
          '6f5396832c45031be601f35a0e4fa84328d99af533429200f7e296fe2cb26ea4',
        ];
        assert.deepEqual(
          events.slice(0, 2).map((event) => event.hash),
          known,
        );
        for (let index = 0; index < events.length; index += 1) {
          const event = events[index] as (typeof events)[number];
          assert.equal(event.hash, auditEventHash({ ...event, source }), 'each hash covers its event');
          if (index > 0) assert.equal(event.prevHash, events[index - 1]?.hash, 'and chains to the one before');
        }
        assert.deepEqual(
          (await store.auditEvents(source, 2, 1)).map((event) => event.seq),
          [3],
        );
        assert.deepEqual(
          (await store.auditByTxn('t1')).map((event) => [event.source, event.seq]),
          [
            [source, 1],
            [source, 2],
            ['spiffe://shop.test/svc/payments', 1],
          ],
        );
        assert.deepEqual(
          (await store.auditHeads()).map((head) => [head.source, head.seq]),
          [
            [source, 4],
            ['spiffe://shop.test/svc/payments', 1],
          ],
        );
        const [stream] = (await store.auditStreams()).filter((entry) => entry.stream === 's1');
        assert.deepEqual(
          [stream?.lastStreamSeq, stream?.gaps, stream?.dropped, stream?.firstSeen, stream?.lastSeen],
          [7, 3, 4, 100, 300],
        );
        assert.deepEqual(
          events.map((event) => event.txn),
          ['t1', 't1', null, null],
          'txn is derived from the event text',
        );
      }),
    );

    it(
      "keeps a stream's sender counters rising, and its clean close",
      withStore(async (store) => {
        const source = 'spiffe://shop.test/svc/orders';
        const streamOf = async () => (await store.auditStreams()).find((row) => row.stream === 's1');
        await store.appendAudit(source, { stream: 's1', dropped: 2, written: 5, entries: [entry('s1', 1)] }, 100);
        assert.deepEqual(
          [(await streamOf())?.written, (await streamOf())?.dropped, (await streamOf())?.closedAt],
          [5, 2, null],
        );
        await store.appendAudit(source, { stream: 's1', dropped: 1, written: 3, entries: [] }, 200);
        assert.deepEqual(
          [(await streamOf())?.written, (await streamOf())?.dropped, (await streamOf())?.lastSeen],
          [5, 2, 200],
          'a late batch lowers nothing; a keep-alive is seen',
        );
        await store.appendAudit(source, { stream: 's1', dropped: 2, written: 5, entries: [] }, 150);
        assert.equal((await streamOf())?.lastSeen, 200, 'a clock stepped back does not move the last sight back');
        await store.appendAudit(
          source,
          { stream: 's1', dropped: 2, written: 6, final: true, entries: [entry('s1', 6)] },
          300,
        );
        await store.appendAudit(source, { stream: 's1', dropped: 2, written: 6, final: true, entries: [] }, 400);
        assert.deepEqual(
          [(await streamOf())?.written, (await streamOf())?.closedAt, (await streamOf())?.gaps],
          [6, 300, 4],
        );
      }),
    );

    it(
      'keeps the checkpoint chain append-only by position',
      withStore(async (store) => {
        assert.equal(await store.newestAuditLink(), null);
        await store.appendAuditLink({ n: 1, at: 10, jws: 'a' });
        await store.appendAuditLink({ n: 2, at: 20, jws: 'b' });
        await assert.rejects(store.appendAuditLink({ n: 2, at: 30, jws: 'c' }), 'a position is written once');
        assert.deepEqual(await store.auditLinks(0, 10), [
          { n: 1, at: 10, jws: 'a' },
          { n: 2, at: 20, jws: 'b' },
        ]);
        assert.deepEqual(await store.auditLinks(1, 10), [{ n: 2, at: 20, jws: 'b' }]);
        assert.deepEqual(await store.newestAuditLink(), { n: 2, at: 20, jws: 'b' });
        assert.deepEqual(await store.auditLegacy(), [], 'a new store has no v1 events');
      }),
    );

    it(
      'keeps one chain per source when appends race',
      withStore(async (store) => {
        const source = 'spiffe://shop.test/svc/orders';
        await Promise.all(
          Array.from({ length: 6 }, (_, index) =>
            store.appendAudit(
              source,
              { stream: `s${index}`, dropped: 0, entries: [entry(`s${index}`, 1), entry(`s${index}`, 2)] },
              index,
            ),
          ),
        );
        const events = await store.auditEvents(source, 0, 100);
        assert.deepEqual(
          events.map((event) => event.seq),
          Array.from({ length: 12 }, (_, index) => index + 1),
        );
        for (let index = 1; index < events.length; index += 1)
          assert.equal(events[index]?.prevHash, events[index - 1]?.hash);
      }),
    );

    it(
      'keeps alerts, newest first',
      withStore(async (store) => {
        const alert = {
          rule: 'lateral-movement',
          severity: 'high' as const,
          subject: 'inventory→payments',
          summary: 's',
          details: '{}',
        };
        await store.addAlert({ ...alert, id: 'a1', at: 10 });
        await store.addAlert({ ...alert, id: 'a2', at: 20, severity: 'critical' });
        assert.deepEqual(
          (await store.alerts(10)).map((entry) => [entry.id, entry.severity]),
          [
            ['a2', 'critical'],
            ['a1', 'high'],
          ],
        );
        assert.deepEqual(
          (await store.alerts(10, 15)).map((entry) => entry.id),
          ['a2'],
        );
        assert.deepEqual(
          (await store.alerts(1)).map((entry) => entry.id),
          ['a2'],
        );
      }),
    );

    const run = (
      runId: string,
      startedAt: number,
      overrides: Partial<{ scanner: string; report: string; exitCode: number }> = {},
    ) => ({
      runId,
      scanner: overrides.scanner ?? 'spiffe://shop.test/scanner/ci',
      trustDomain: 'shop.test',
      startedAt,
      finishedAt: startedAt + 500,
      exitCode: overrides.exitCode ?? 0,
      summary: '{"enforced":3,"weak":0,"inconclusive":0,"skipped":1}',
      report: overrides.report ?? `{"runId":"${runId}","results":[]}`,
      receivedAt: startedAt + 600,
    });

    it(
      'keeps scan runs: newest first without their reports, one with its report',
      withStore(async (store) => {
        assert.equal(await store.recordScan(run('r1', 1_000)), 'stored');
        assert.equal(await store.recordScan(run('r3', 3_000, { exitCode: 1 })), 'stored');
        assert.equal(await store.recordScan(run('r2', 2_000, { report: 'x'.repeat(200_000) })), 'stored');
        const [newest, ...rest] = await store.scans(10);
        assert.deepEqual(newest, (({ report: _report, ...summary }) => summary)(run('r3', 3_000, { exitCode: 1 })));
        assert.equal('report' in (newest ?? {}), false, 'the list leaves the report out');
        assert.deepEqual(
          rest.map((entry) => entry.runId),
          ['r2', 'r1'],
        );
        assert.deepEqual(
          (await store.scans(1)).map((entry) => entry.runId),
          ['r3'],
        );
        assert.deepEqual(await store.scan('r1'), run('r1', 1_000));
        assert.equal((await store.scan('r2'))?.report.length, 200_000);
        assert.equal(await store.scan('r9'), null);
      }),
    );

    it(
      'writes a scan run once: the same post again is a duplicate, another report or sender under its id a conflict',
      withStore(async (store) => {
        const first = run('r1', 1_000);
        assert.equal(await store.recordScan(first), 'stored');
        assert.equal(await store.recordScan({ ...first, receivedAt: 9_999 }), 'duplicate');
        assert.equal(await store.recordScan({ ...first, report: '{"runId":"r1","results":["forged"]}' }), 'conflict');
        assert.equal(await store.recordScan({ ...first, scanner: 'spiffe://shop.test/admin/mallory' }), 'conflict');
        assert.deepEqual(await store.scan('r1'), first, 'nothing changed');
        const racing = await Promise.all(Array.from({ length: 6 }, () => store.recordScan(run('r2', 2_000))));
        assert.deepEqual(racing.filter((outcome) => outcome === 'stored').length, 1);
        assert.deepEqual(racing.filter((outcome) => outcome === 'duplicate').length, 5);
      }),
    );

    it(
      'writes key documents by compare-and-set on the generation: the next one only, no gaps, newest first',
      withStore(async (store) => {
        assert.equal(await store.keyDocument('ring'), null);
        assert.deepEqual(await store.keyDocumentGenerations(), new Map());
        assert.equal(await store.putKeyDocument(keyDocument('ring', 1)), false, 'a new name starts at 0');
        assert.equal(await store.putKeyDocument(keyDocument('ring', 0)), true);
        assert.equal(await store.putKeyDocument(keyDocument('ring', 0, 'another')), false, 'generation 0 is taken');
        assert.equal(await store.putKeyDocument(keyDocument('ring', 2)), false, 'a gap');
        assert.equal(await store.putKeyDocument(keyDocument('ring', 1)), true);
        assert.equal(await store.putKeyDocument(keyDocument('ca', 0)), true);
        assert.deepEqual(await store.keyDocument('ring'), keyDocument('ring', 1));
        assert.deepEqual(await store.keyDocument('ca'), keyDocument('ca', 0));
        assert.deepEqual(
          await store.keyDocumentGenerations(),
          new Map([
            ['ca', 0],
            ['ring', 1],
          ]),
        );
        assert.deepEqual(
          await store.keyDocuments(),
          [keyDocument('ca', 0), keyDocument('ring', 0), keyDocument('ring', 1)],
          'every kept generation, by name then generation',
        );
      }),
    );

    it('lets exactly one of several writers of one key document generation win, also on two connections', async () => {
      const database = randomBytes(6).toString('hex');
      const [a, b] = [await backend.open(database), await backend.open(database)];
      try {
        await a.putKeyDocument(keyDocument('ring', 0));
        const racing = await Promise.all(
          Array.from({ length: 8 }, (_, i) => (i % 2 === 0 ? a : b).putKeyDocument(keyDocument('ring', 1, `w${i}`))),
        );
        assert.equal(racing.filter(Boolean).length, 1, `one winner of ${JSON.stringify(racing)}`);
        const winner = `w${racing.indexOf(true)}`;
        assert.deepEqual(await b.keyDocument('ring'), keyDocument('ring', 1, winner));
        // Writers of the next and the one after at once: the one after is a gap until the next is there.
        const [next, afterNext] = await Promise.all([
          a.putKeyDocument(keyDocument('ring', 2)),
          b.putKeyDocument(keyDocument('ring', 3)),
        ]);
        assert.equal(next, true);
        assert.equal((await a.keyDocument('ring'))?.generation, afterNext ? 3 : 2);
      } finally {
        await a.close();
        await b.close();
      }
    });

    it(`keeps the ${KEY_DOCUMENT_GENERATIONS_KEPT} newest generations of each key document`, async () => {
      const database = randomBytes(6).toString('hex');
      const store = await backend.open(database);
      try {
        for (let generation = 0; generation < 25; generation += 1) {
          assert.equal(await store.putKeyDocument(keyDocument('ring', generation)), true);
          if (generation < 3) assert.equal(await store.putKeyDocument(keyDocument('ca', generation)), true);
        }
        assert.deepEqual(await store.keyDocument('ring'), keyDocument('ring', 24));
        assert.deepEqual(
          await store.keyDocumentGenerations(),
          new Map([
            ['ca', 2],
            ['ring', 24],
          ]),
        );
        // What a rewrap reads: every kept generation, not only the newest.
        assert.deepEqual(
          (await store.keyDocuments()).map(({ name, generation }) => `${name}#${generation}`),
          [
            ...[0, 1, 2].map((generation) => `ca#${generation}`),
            ...Array.from({ length: KEY_DOCUMENT_GENERATIONS_KEPT }, (_, i) => `ring#${15 + i}`),
          ],
        );
      } finally {
        await store.close();
      }
      // The interface shows the newest only: what is kept is read from the database itself.
      const kept = await storedKeyGenerations(backend.name, database);
      assert.deepEqual(
        kept.get('ring'),
        Array.from({ length: KEY_DOCUMENT_GENERATIONS_KEPT }, (_, i) => 15 + i),
      );
      assert.deepEqual(kept.get('ca'), [0, 1, 2], 'other names keep theirs');
    });

    it(
      'rewraps a key document only while it is as read, an older generation as well as the newest',
      withStore(async (store) => {
        const current = keyDocument('ring', 0);
        await store.putKeyDocument(current);
        const rewrapped = { ...current, kekId: 'k2', wrappedDek: 'dek-under-k2' };
        assert.equal(await store.rewrapKeyDocument(current, rewrapped), true);
        assert.deepEqual(await store.keyDocument('ring'), rewrapped);
        assert.equal(await store.rewrapKeyDocument(current, rewrapped), false, 'no longer as read');
        await assert.rejects(store.rewrapKeyDocument(rewrapped, { ...rewrapped, sealed: 'forged' }), TypeError);
        await assert.rejects(store.rewrapKeyDocument(rewrapped, { ...rewrapped, generation: 5 }), TypeError);
        assert.deepEqual(await store.keyDocument('ring'), rewrapped);
        // Generation 0 is no longer the newest: its row is rewrapped all the same, and the newest is untouched.
        const newest = keyDocument('ring', 1);
        await store.putKeyDocument(newest);
        const older = { ...rewrapped, kekId: 'k3', wrappedDek: 'dek-under-k3' };
        assert.equal(await store.rewrapKeyDocument(rewrapped, older), true);
        assert.deepEqual(await store.keyDocuments(), [older, newest]);
      }),
    );

    it(
      "publishes policy sets by compare-and-set on the head's position, one position per publication",
      withStore(async (store) => {
        assert.equal(await store.policyHead(), null);
        assert.equal(await store.policyHeadSeq(), 0);
        assert.equal(await store.publishPolicy(policySet('v1'), 1), false, 'the first head replaces position 0');
        assert.equal(await store.publishPolicy(policySet('v1'), 0), true);
        assert.deepEqual(await store.policyHead(), { ...policySet('v1'), seq: 1 });
        assert.equal(await store.publishPolicy(policySet('v2'), 0), false, 'position 0 is gone');
        assert.equal(await store.publishPolicy(policySet('v2'), 2), false, 'position 2 is not there yet');
        assert.equal((await store.policyHead())?.version, 'v1', 'a refused publication writes nothing');
        assert.equal(await store.publishPolicy(policySet('v2'), 1), true);
        assert.equal(await store.policyHeadSeq(), 2);
        // Back to an earlier version (an edit undone): a new position, the set's row says who published it last,
        // the head carries that publication's signature.
        const again = { ...policySet('v1', 'replica-b:/srv/policies'), appliedAt: 2_000 };
        assert.equal(await store.publishPolicy(again, 2), true);
        assert.deepEqual(await store.policyHead(), { ...again, seq: 3 });
        // Sources come back whatever order they were given in.
        const reordered = { ...policySet('v3'), sources: { 'b.cedar': 'b', 'a.cedar': 'a' } };
        assert.equal(await store.publishPolicy(reordered, 3), true);
        assert.deepEqual((await store.policyHead())?.sources, { 'a.cedar': 'a', 'b.cedar': 'b' });
        for (const [set, expectedSeq] of [
          [policySet('v4'), -1],
          [policySet('v4'), 1.5],
          [{ ...policySet('v4'), version: '' }, 4],
          [{ ...policySet('v4'), sources: {} }, 4],
          [{ ...policySet('v4'), sources: { 'a.cedar': 1 as unknown as string } }, 4],
          [{ ...policySet('v4'), signature: '' }, 4],
          [{ ...policySet('v4'), signature: undefined as unknown as string }, 4],
        ] as const)
          await assert.rejects(store.publishPolicy(set, expectedSeq), TypeError);
        assert.equal(await store.policyHeadSeq(), 4, 'malformed publications write nothing');
      }),
    );

    it('lets exactly one of several publishers of one head position win, also on two connections', async () => {
      const database = randomBytes(6).toString('hex');
      const [a, b] = [await backend.open(database), await backend.open(database)];
      try {
        const first = await Promise.all(
          Array.from({ length: 6 }, (_, i) => (i % 2 === 0 ? a : b).publishPolicy(policySet(`first-${i}`), 0)),
        );
        assert.equal(first.filter(Boolean).length, 1, `one first head of ${JSON.stringify(first)}`);
        const racing = await Promise.all(
          Array.from({ length: 8 }, (_, i) => (i % 2 === 0 ? a : b).publishPolicy(policySet(`w${i}`), 1)),
        );
        assert.equal(racing.filter(Boolean).length, 1, `one winner of ${JSON.stringify(racing)}`);
        assert.deepEqual(await b.policyHead(), { ...policySet(`w${racing.indexOf(true)}`), seq: 2 });
      } finally {
        await a.close();
        await b.close();
      }
      // Every set published is kept; refused ones were never written.
      const kept = await storedPolicyVersions(backend.name, database);
      assert.equal(kept.length, 2);
    });

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

describe('the audit trail at the database level', () => {
  it('refuses UPDATE and DELETE of trail rows even to a direct SQL client (SQLite)', async () => {
    const path = join(scratch, 'append-only.db');
    const store = openSqliteStore(path);
    await store.appendAudit(
      'spiffe://shop.test/svc/orders',
      { stream: 's', dropped: 0, entries: [{ streamSeq: 1, event: '{}' }] },
      1,
    );
    await store.close();
    const { DatabaseSync } = await import('node:sqlite');
    const db = new DatabaseSync(path);
    try {
      assert.throws(() => db.exec('UPDATE audit_events SET event = \'{"forged":true}\''), /append-only/);
      assert.throws(() => db.exec('DELETE FROM audit_events'), /append-only/);
    } finally {
      db.close();
    }
  });

  it(
    'refuses UPDATE and DELETE of trail rows (PostgreSQL)',
    { skip: pgProblem === null ? false : 'PostgreSQL not reachable' },
    async () => {
      const schema = postgres.schema();
      const store = await openPostgresStore({ connectionString: PG_URL, schema });
      await store.appendAudit(
        'spiffe://shop.test/svc/orders',
        { stream: 's', dropped: 0, entries: [{ streamSeq: 1, event: '{}' }] },
        1,
      );
      await store.close();
      const client = new pg.Client({ connectionString: PG_URL, options: `-c search_path=${schema}` });
      await client.connect();
      try {
        await assert.rejects(client.query("UPDATE audit_events SET event = '{}'"), /append-only/);
        await assert.rejects(client.query('DELETE FROM audit_events'), /append-only/);
      } finally {
        await client.end();
      }
    },
  );
});

describe('migration 13: successions name their successor key, and an SVID can be retired', () => {
  /** A succession spent before migration 13, as the previous release left it. */
  const before = (dialect: 'sqlite' | 'postgres') =>
    MIGRATIONS.filter((step) => step.version <= 12).map((step) => step[dialect]);
  const legacyRow = "INSERT INTO svid_successions (serial, successor, at, via) VALUES ('a1', 'b1', 10, 'renew')";

  async function upgraded(store: ControlPlaneStore): Promise<void> {
    try {
      assert.deepEqual(await store.svidSuccession('a1'), {
        serial: 'a1',
        successor: 'b1',
        successorKey: null,
        at: 10,
        via: 'renew',
      });
      // No key was recorded: no retry can match it.
      const spent = await store.spendSvid({ serial: 'a1', successor: 'b2', successorKey: 'k', at: 11, via: 'recover' });
      assert.equal(spent?.successor, 'b1');
      assert.equal(
        await store.spendSvid({ serial: 'a2', successor: '', successorKey: null, at: 12, via: 'retire' }),
        null,
      );
    } finally {
      await store.close();
    }
  }

  it('keeps the SVIDs spent before (SQLite)', async () => {
    const path = join(scratch, 'before-13.db');
    const { DatabaseSync } = await import('node:sqlite');
    const db = new DatabaseSync(path);
    db.exec('CREATE TABLE lockstep_migrations (version INTEGER PRIMARY KEY, applied_at INTEGER NOT NULL)');
    before('sqlite').forEach((sql, index) => {
      db.exec(sql);
      db.prepare('INSERT INTO lockstep_migrations (version, applied_at) VALUES (?, 0)').run(index + 1);
    });
    db.exec(legacyRow);
    db.close();
    await upgraded(openSqliteStore(path));
  });

  it(
    'keeps the SVIDs spent before (PostgreSQL)',
    { skip: pgProblem === null ? false : 'PostgreSQL not reachable' },
    async () => {
      const schema = postgres.schema();
      const client = new pg.Client({ connectionString: PG_URL, options: `-c search_path=${schema}` });
      await client.connect();
      try {
        await client.query(`CREATE SCHEMA ${schema}`);
        await client.query(
          'CREATE TABLE lockstep_migrations (version INTEGER PRIMARY KEY, applied_at BIGINT NOT NULL)',
        );
        for (const [index, sql] of before('postgres').entries()) {
          await client.query(sql);
          await client.query('INSERT INTO lockstep_migrations (version, applied_at) VALUES ($1, 0)', [index + 1]);
        }
        await client.query(legacyRow);
      } finally {
        await client.end();
      }
      await upgraded(await openPostgresStore({ connectionString: PG_URL, schema }));
    },
  );
});

/** Every stored generation of every key document, read with SQL (the store's interface gives the newest only). */
async function storedKeyGenerations(backend: string, database: string): Promise<Map<string, number[]>> {
  const sql = 'SELECT name, generation FROM key_documents ORDER BY name, generation';
  let rows: { name: string; generation: number | string }[];
  if (backend === 'sqlite') {
    const { DatabaseSync } = await import('node:sqlite');
    const db = new DatabaseSync(join(scratch, `${database}.db`));
    try {
      rows = db.prepare(sql).all() as typeof rows;
    } finally {
      db.close();
    }
  } else {
    const client = new pg.Client({ connectionString: PG_URL, options: `-c search_path=${schemaFor[database]}` });
    await client.connect();
    try {
      rows = (await client.query(sql)).rows as typeof rows;
    } finally {
      await client.end();
    }
  }
  const kept = new Map<string, number[]>();
  for (const row of rows) kept.set(row.name, [...(kept.get(row.name) ?? []), Number(row.generation)]);
  return kept;
}

async function storedPolicyVersions(backend: string, database: string): Promise<string[]> {
  const sql = 'SELECT version FROM policy_sets ORDER BY version';
  if (backend === 'sqlite') {
    const { DatabaseSync } = await import('node:sqlite');
    const db = new DatabaseSync(join(scratch, `${database}.db`));
    try {
      return (db.prepare(sql).all() as { version: string }[]).map((row) => row.version);
    } finally {
      db.close();
    }
  }
  const client = new pg.Client({ connectionString: PG_URL, options: `-c search_path=${schemaFor[database]}` });
  await client.connect();
  try {
    return ((await client.query(sql)).rows as { version: string }[]).map((row) => row.version);
  } finally {
    await client.end();
  }
}

/** Two stores on one PostgreSQL schema: two control-plane replicas, as far as the store can tell. */
async function twoReplicas(): Promise<{ a: ControlPlaneStore; b: ControlPlaneStore; schema: string }> {
  const schema = postgres.schema();
  const a = await openPostgresStore({ connectionString: PG_URL, schema });
  return { a, b: await openPostgresStore({ connectionString: PG_URL, schema }), schema };
}

describe('revocation positions across replicas (PostgreSQL)', () => {
  it(
    'commit in order: a reader following "everything after the highest seen" misses none of two replicas\' concurrent writes',
    { skip: pgProblem === null ? false : 'PostgreSQL not reachable' },
    async () => {
      const { a, b } = await twoReplicas();
      try {
        const seen = new Set<string>();
        let highest = 0;
        let writing = true;
        // The reader: what every stream and the feed do (Last-Event-ID, `seen = max`).
        const reader = (async () => {
          while (writing) {
            for (const entry of await a.revocationsSince(highest)) {
              seen.add(entry.value);
              highest = Math.max(highest, entry.seq);
            }
          }
        })();
        const writes = Array.from({ length: 60 }, (_, i) =>
          (i % 2 === 0 ? a : b).addRevocation({ kind: 'sub', value: `user-${i}`, reason: 'test', actor: 'cli', at: i }),
        );
        await Promise.all(writes);
        writing = false;
        await reader;
        for (const entry of await a.revocationsSince(highest)) seen.add(entry.value);
        assert.equal(seen.size, 60, `the reader missed ${60 - seen.size} of 60 revocations`);
      } finally {
        await a.close();
        await b.close();
      }
    },
  );
});

describe('revocation notifications (PostgreSQL)', () => {
  it(
    'resume after the listening connection is cut: a revocation through another replica is heard again',
    { skip: pgProblem === null ? false : 'PostgreSQL not reachable' },
    async () => {
      const { a, b, schema } = await twoReplicas();
      const admin = new pg.Client({ connectionString: PG_URL });
      await admin.connect();
      let heard = 0;
      const stop = await a.watchRevocations?.(() => heard++);
      assert.ok(stop, 'the PostgreSQL store watches');
      try {
        const until = async (check: () => boolean, what: string) => {
          for (let i = 0; i < 100 && !check(); i++) await new Promise((resolve) => setTimeout(resolve, 20));
          assert.ok(check(), `timed out waiting for ${what}`);
        };
        await b.addRevocation({ kind: 'sub', value: 'before', reason: 'test', actor: 'cli', at: 1 });
        await until(() => heard >= 1, 'the first notification');
        // A database restart or failover, as the listening connection sees it.
        const cut = await admin.query(
          `SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE query = 'LISTEN lockstep_revocations_${schema}'`,
        );
        assert.equal(cut.rowCount, 1, 'the listening connection was found and cut');
        const afterCut = heard;
        await until(() => heard > afterCut, 'the listener called again once listening again');
        const reconnected = heard;
        await b.addRevocation({ kind: 'sub', value: 'after', reason: 'test', actor: 'cli', at: 2 });
        await until(() => heard > reconnected, 'a notification after the cut');
      } finally {
        await stop?.();
        await admin.end();
        await a.close();
        await b.close();
      }
    },
  );
});

describe('key document notifications (PostgreSQL)', () => {
  it(
    "name the document another replica wrote, on the revocations' listening connection",
    { skip: pgProblem === null ? false : 'PostgreSQL not reachable' },
    async () => {
      const { a, b, schema } = await twoReplicas();
      const admin = new pg.Client({ connectionString: PG_URL });
      await admin.connect();
      const names: (string | null)[] = [];
      let revocations = 0;
      const stopKeys = await a.watchKeys?.((name) => names.push(name));
      const stopRevocations = await a.watchRevocations?.(() => revocations++);
      assert.ok(stopKeys && stopRevocations, 'the PostgreSQL store watches both');
      const until = async (check: () => boolean, what: string) => {
        for (let i = 0; i < 100 && !check(); i++) await new Promise((resolve) => setTimeout(resolve, 20));
        assert.ok(check(), `timed out waiting for ${what}`);
      };
      try {
        const listening = await admin.query('SELECT pid FROM pg_stat_activity WHERE application_name = $1', [
          `lockstep-listen-${schema}`,
        ]);
        assert.equal(listening.rowCount, 1, 'one listening connection for both channels');

        assert.equal(await b.putKeyDocument(keyDocument('ring', 0)), true);
        assert.equal(await b.putKeyDocument(keyDocument('ring', 5)), false, 'a refused write');
        await b.addRevocation({ kind: 'sub', value: 'mallory', reason: 'test', actor: 'cli', at: 1 });
        await until(() => revocations === 1 && names.length === 1, 'both notifications');
        assert.deepEqual(names, ['ring'], 'the refused write notified nobody');

        // The connection cut: every listener of both channels hears once it listens again (null: anything).
        await admin.query('SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1', [
          `lockstep-listen-${schema}`,
        ]);
        await until(() => names.length === 2 && revocations === 2, 'the listeners called after reconnecting');
        assert.equal(names[1], null);
        assert.equal(await b.putKeyDocument(keyDocument('ca', 0)), true);
        await until(() => names.length === 3, 'a notification after the cut');
        assert.equal(names[2], 'ca');

        // The last listener gone, the connection closes.
        await stopKeys();
        await stopRevocations();
        const left = await admin.query('SELECT pid FROM pg_stat_activity WHERE application_name = $1', [
          `lockstep-listen-${schema}`,
        ]);
        assert.equal(left.rowCount, 0, 'no listening connection left');
      } finally {
        await stopKeys?.();
        await stopRevocations?.();
        await admin.end();
        await a.close();
        await b.close();
      }
    },
  );
});

describe('policy notifications (PostgreSQL)', () => {
  it(
    'tell another replica of each publication, on the shared listening connection, and again after it is cut',
    { skip: pgProblem === null ? false : 'PostgreSQL not reachable' },
    async () => {
      const { a, b, schema } = await twoReplicas();
      const admin = new pg.Client({ connectionString: PG_URL });
      await admin.connect();
      let heard = 0;
      let keys = 0;
      const stopPolicy = await a.watchPolicy?.(() => heard++);
      const stopKeys = await a.watchKeys?.(() => keys++);
      assert.ok(stopPolicy && stopKeys, 'the PostgreSQL store watches both');
      const until = async (check: () => boolean, what: string) => {
        for (let i = 0; i < 100 && !check(); i++) await new Promise((resolve) => setTimeout(resolve, 20));
        assert.ok(check(), `timed out waiting for ${what}`);
      };
      try {
        const listening = await admin.query('SELECT pid FROM pg_stat_activity WHERE application_name = $1', [
          `lockstep-listen-${schema}`,
        ]);
        assert.equal(listening.rowCount, 1, 'one listening connection for every channel');
        assert.equal(await b.publishPolicy(policySet('v1'), 0), true);
        assert.equal(await b.publishPolicy(policySet('v2'), 0), false, 'a refused publication');
        await until(() => heard === 1, 'the notification');
        await new Promise((resolve) => setTimeout(resolve, 100));
        assert.equal(heard, 1, 'the refused publication notified nobody');
        assert.equal(keys, 0, 'nor the key documents channel');
        assert.equal((await a.policyHead())?.version, 'v1');

        await admin.query('SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1', [
          `lockstep-listen-${schema}`,
        ]);
        await until(() => heard === 2, 'the listener called once listening again');
        assert.equal(await b.publishPolicy(policySet('v2'), 1), true);
        await until(() => heard === 3, 'a notification after the cut');
      } finally {
        await stopPolicy?.();
        await stopKeys?.();
        await admin.end();
        await a.close();
        await b.close();
      }
    },
  );
});

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
