/**
 * Replicas on one PostgreSQL store share one policy, the store's head: a change saved in one replica's
 * policy directory reaches a guard connected to another within 1 s (LISTEN/NOTIFY, not the re-read); a
 * replica started with a stale directory adopts the head instead of rolling policy back, and publishes
 * only when its directory is edited; an invalid change publishes nothing; the periodic re-read catches
 * up without notifications; an edit made without seeing another replica's publication is refused, not
 * forced over it. Every head is signed with the replicas' policy key: a head a database writer made up or
 * changed, or an older signed head restored over a newer one, is refused by every running replica, which keeps
 * the set in force (and records the refusal). Needs PostgreSQL (LOCKSTEP_TEST_PG, default
 * postgres://postgres@127.0.0.1:5432/test); skipped with a message when it is unreachable, a failure when
 * LOCKSTEP_REQUIRE_PG=1 (CI).
 */
import assert from 'node:assert/strict';
import { cpSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { hostname, tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import type { DecisionEvent } from '@lockstep/guard';
import { policySetFromSources } from '@lockstep/policy';
import { testPostgres } from '@lockstep/testkit';
import pg from 'pg';
import {
  createJoinToken,
  createPolicyService,
  openPostgresStore,
  openSigningKey,
  openWorkloadCa,
  startControlPlane,
  subscribeAdminActions,
  type ControlPlaneStore,
  type PolicyChange,
  type PolicyService,
  type PolicyServiceOptions,
  type RunningControlPlane,
  type WorkloadCa,
} from '../src/index.ts';
import { signPolicyHead } from '../src/policy/policy-head-signature.ts';
import { connectGuardStream, joinControlPlane, type GuardStream } from '@lockstep/workload';

type SharedPolicyOptions = NonNullable<PolicyServiceOptions['shared']>;

const TD = 'shop.test';
const EXAMPLE_POLICIES = new URL('../../guard/example/policies/', import.meta.url);
const ORDERS = readFileSync(new URL('orders.cedar', EXAMPLE_POLICIES), 'utf8');
/** A policy more, so that the set (and the orders slice) gets a new version. */
const withPolicy = (id: string) =>
  `${ORDERS}\n@id("${id}")\nforbid (principal, action == Lockstep::Action::"orders:delete", resource == Lockstep::Service::"orders");\n`;

const postgres = await testPostgres();
const scratch = mkdtempSync(join(tmpdir(), 'lockstep-shared-policy-'));
const schema = postgres.schema();
const opened: {
  stores: ControlPlaneStore[];
  policies: PolicyService[];
  servers: RunningControlPlane[];
  streams: GuardStream[];
} = { stores: [], policies: [], servers: [], streams: [] };

let ca: WorkloadCa;
let signingKey: Awaited<ReturnType<typeof openSigningKey>>;

after(async () => {
  for (const stream of opened.streams) await stream.close();
  for (const server of opened.servers) await server.close();
  for (const policy of opened.policies) policy.close();
  for (const store of opened.stores) await store.close();
  rmSync(scratch, { recursive: true, force: true });
  await postgres.cleanup();
});

/** A policy directory of its own, a copy of the example's. */
function policyDir(name: string): string {
  const dir = join(scratch, name);
  cpSync(EXAMPLE_POLICIES, dir, { recursive: true });
  return dir;
}

async function openStore(): Promise<ControlPlaneStore> {
  const store = await openPostgresStore({ connectionString: postgres.url, schema });
  opened.stores.push(store);
  return store;
}

/** A replica's policy service on its own connection to the shared store. */
async function replicaPolicy(
  dir: string,
  shared: Partial<SharedPolicyOptions> = {},
  watch = true,
): Promise<{ policy: PolicyService; store: ControlPlaneStore; changes: PolicyChange[] }> {
  const store = await openStore();
  // The re-read is pushed out of the way: only the notification can deliver in time.
  const policy = await createPolicyService({ dir, signingKey, watch, shared: { store, rereadMs: 60_000, ...shared } });
  opened.policies.push(policy);
  const changes: PolicyChange[] = [];
  policy.onChange((change) => changes.push(change));
  return { policy, store, changes };
}

/** The shared schema as a database writer sees it: no key of the replicas', only SQL. */
async function asDatabaseWriter<T>(work: (db: pg.Client) => Promise<T>): Promise<T> {
  const db = new pg.Client({ connectionString: postgres.url, options: `-c search_path=${schema}` });
  await db.connect();
  try {
    return await work(db);
  } finally {
    await db.end();
  }
}

/** The head row as it is stored (what a backup of the database holds). */
type HeadRow = { version: string; seq: string; signature: string };
const readHeadRow = (db: pg.Client) =>
  db.query<HeadRow>('SELECT version, seq, signature FROM policy_head WHERE id = 1').then((result) => result.rows[0]);
/** Replicas hear of a head moved by SQL as of a publication: a writer can notify too. */
const notifyReplicas = (db: pg.Client) => db.query('SELECT pg_notify($1, $2)', [`lockstep_policy_${schema}`, 'x']);

async function until(check: () => boolean, what: string, limitMs = 3_000): Promise<void> {
  const started = performance.now();
  while (!check() && performance.now() - started < limitMs) await new Promise((resolve) => setTimeout(resolve, 5));
  assert.ok(check(), `timed out waiting for ${what}`);
}

describe('policy shared by control-plane replicas on PostgreSQL', { skip: postgres.skip }, () => {
  const dirA = () => join(scratch, 'a');
  let a: Awaited<ReturnType<typeof replicaPolicy>>;
  let b: Awaited<ReturnType<typeof replicaPolicy>>;
  let example: string;

  before(async () => {
    ca = await openWorkloadCa({ trustDomain: TD, keyDir: join(scratch, 'keys') });
    signingKey = await openSigningKey(join(scratch, 'keys'), 'policy');
    a = await replicaPolicy(policyDir('a'));
    example = a.policy.version as string;
    b = await replicaPolicy(policyDir('b'));
  });

  it('publishes the first replica directory as the head; the next replica adopts it', async () => {
    assert.equal(a.policy.publishedBy, `${hostname()}:${dirA()}`);
    assert.equal(b.policy.version, example);
    assert.equal(b.policy.directoryVersion, example, 'the same files give the same version in another directory');
    assert.equal(b.policy.publishedBy, a.policy.publishedBy, "B adopted A's publication, and published nothing");
    assert.deepEqual(await b.store.policyHead().then((head) => [head?.seq, head?.version]), [1, example]);
  });

  it("pushes a change saved in A's directory to a guard connected to B within 1 s", async () => {
    const replicaB = await startControlPlane({ ca, store: b.store, policy: b.policy, rereadMs: 60_000 });
    opened.servers.push(replicaB);
    const { token } = await createJoinToken(b.store, ca, { service: 'orders', createdBy: 'test' });
    const orders = await joinControlPlane({ url: replicaB.url, trustDomain: TD, joinToken: token, service: 'orders' });
    const pushed: { version: string; at: number }[] = [];
    const stream = connectGuardStream({
      url: replicaB.url,
      trustDomain: TD,
      tls: { cert: orders.chainPem, key: orders.keyPem, ca: orders.bundlePem },
      target: { setPolicyBundle: async () => ({}), setTrustBundle: () => {}, revoke: () => {}, lift: () => {} },
      onEvent: (event) => {
        if (event.kind === 'policy') pushed.push({ version: event.version, at: performance.now() });
      },
    });
    opened.streams.push(stream);
    await until(() => pushed.length === 1, "the stream's first policy");

    const savedAt = performance.now();
    writeFileSync(join(dirA(), 'orders.cedar'), withPolicy('no-deletes'));
    await until(() => pushed.length === 2, 'the change pushed through B', 5_000);
    const elapsed = (pushed[1]?.at ?? Infinity) - savedAt;
    console.log(`a policy change saved at replica A reached a guard on replica B in ${elapsed.toFixed(0)} ms`);
    assert.ok(elapsed < 1_000, `took ${elapsed.toFixed(0)} ms`);
    assert.equal(pushed[1]?.version, (await a.policy.bundleFor('orders'))?.version);
    assert.notEqual(a.policy.version, example);
    assert.equal(b.policy.version, a.policy.version);
    assert.equal(b.policy.directoryVersion, example, "B's own directory is left alone");
    assert.deepEqual(
      b.changes.map((change) => change.kind === 'applied' && change.appliedBy),
      [a.policy.publishedBy],
      'B applied it once, naming who published it',
    );
  });

  it('lets a replica started with a stale directory adopt the head, not roll it back; its edit publishes', async () => {
    const head = await a.store.policyHead();
    const c = await replicaPolicy(policyDir('c-stale'));
    assert.equal(c.policy.version, a.policy.version, 'the head is in force');
    assert.equal(c.policy.directoryVersion, example, 'its directory holds the old set');
    assert.notEqual(c.policy.version, c.policy.directoryVersion);
    assert.deepEqual(await a.store.policyHead(), head, 'nothing was published');
    await new Promise((resolve) => setTimeout(resolve, 200));
    assert.equal(a.changes.length, 1, 'A heard nothing');
    assert.equal(b.changes.length, 1, 'B heard nothing');

    // Saving its old content again is no edit: nothing is published.
    writeFileSync(join(scratch, 'c-stale', 'orders.cedar'), ORDERS);
    await new Promise((resolve) => setTimeout(resolve, 300));
    assert.deepEqual(await a.store.policyHead(), head);
    // An edit is: every replica applies it.
    writeFileSync(join(scratch, 'c-stale', 'orders.cedar'), withPolicy('edited-at-c'));
    await until(() => c.policy.version !== head?.version, 'C published its edit');
    assert.equal(c.policy.directoryVersion, c.policy.version);
    await until(
      () => a.policy.version === c.policy.version && b.policy.version === c.policy.version,
      "C's edit applied by A and B",
    );
    assert.equal(a.policy.publishedBy, c.policy.publishedBy);
    assert.equal((await a.store.policyHead())?.seq, (head?.seq ?? 0) + 1);
  });

  it("refuses an invalid change in A's directory and publishes nothing", async () => {
    const head = await a.store.policyHead();
    const inForce = a.policy.version;
    const [aChanges, bChanges] = [a.changes.length, b.changes.length];
    writeFileSync(join(dirA(), 'broken.cedar'), 'permit (principal, action, resource) when { context.nope };\n');
    await until(() => a.changes.length > aChanges, "A's refusal");
    const refusal = a.changes.at(-1);
    assert.equal(refusal?.kind, 'refused');
    assert.match(a.policy.lastRefusal?.reason ?? '', /broken\.cedar:1/);
    assert.equal(a.policy.version, inForce, 'A keeps the set in force');
    await new Promise((resolve) => setTimeout(resolve, 200));
    assert.deepEqual(await a.store.policyHead(), head, 'nothing was published');
    assert.equal(b.changes.length, bChanges, 'B heard nothing');
    assert.equal(b.policy.version, inForce);
    rmSync(join(dirA(), 'broken.cedar'));
    await until(() => a.policy.lastRefusal === null, 'the directory valid again');
  });

  it('catches up by the periodic re-read when no notification comes', async () => {
    const store = await openStore();
    // A store that cannot notify (as if its notifications were lost).
    const deaf: SharedPolicyOptions['store'] = {
      publishPolicy: (set, expectedSeq) => store.publishPolicy(set, expectedSeq),
      policyHead: () => store.policyHead(),
      policyHeadSeq: () => store.policyHeadSeq(),
    };
    const policy = await createPolicyService({
      dir: policyDir('d'),
      signingKey,
      watch: false,
      shared: { store: deaf, rereadMs: 100 },
    });
    opened.policies.push(policy);
    assert.equal(policy.version, a.policy.version);
    const before = a.policy.version;
    writeFileSync(join(dirA(), 'orders.cedar'), withPolicy('caught-up'));
    await until(() => a.policy.version !== before, 'A published');
    await until(() => policy.version === a.policy.version && a.policy.publishedBy === policy.publishedBy, 'caught up');
  });

  it("refuses an edit made without seeing another replica's publication, and adopts that one", async () => {
    const store = await openStore();
    const deaf: SharedPolicyOptions['store'] = {
      publishPolicy: (set, expectedSeq) => store.publishPolicy(set, expectedSeq),
      policyHead: () => store.policyHead(),
      policyHeadSeq: () => store.policyHeadSeq(),
    };
    const e = await createPolicyService({
      dir: policyDir('e'),
      signingKey,
      watch: false,
      shared: { store: deaf, rereadMs: 60_000 },
    });
    opened.policies.push(e);
    const changes: PolicyChange[] = [];
    e.onChange((change) => changes.push(change));
    // A publishes; E does not hear of it, then its own directory is edited.
    const seq = (await store.policyHead())?.seq ?? 0;
    const before = a.policy.version;
    writeFileSync(join(dirA(), 'orders.cedar'), withPolicy('published-by-a'));
    await until(() => a.policy.version !== before && b.policy.version === a.policy.version, 'A published, B applied');
    assert.equal((await store.policyHead())?.seq, seq + 1);
    writeFileSync(join(scratch, 'e', 'orders.cedar'), withPolicy('edited-at-e'));
    const change = await e.reload();
    assert.equal(change.kind, 'refused');
    assert.match(change.kind === 'refused' ? change.reason : '', /NOT published: another replica .* meanwhile/);
    assert.equal(e.version, a.policy.version, "A's publication is in force at E");
    assert.deepEqual(
      changes.map((c) => c.kind),
      ['applied', 'refused'],
    );
    // Saved again, having seen it: published over it.
    const again = await e.reload();
    assert.equal(again.kind, 'applied');
    await until(() => a.policy.version === e.version && b.policy.version === e.version, "E's edit everywhere");
  });

  it('refuses a head a database writer made up or changed, at every replica; the set in force stays', async () => {
    const inForce = a.policy.version;
    const bundle = await b.policy.bundleFor('orders');
    const refusals: DecisionEvent[] = [];
    const stopListening = subscribeAdminActions((event) => {
      if (event.action === 'admin:policy.apply' && event.decision === 'deny') refusals.push(event);
    });
    const heard = (replica: typeof a, count: number) => () =>
      replica.changes.filter((change) => change.kind === 'refused').length >= count;
    const lastReason = (replica: typeof a) => {
      const change = replica.changes.at(-1);
      return change?.kind === 'refused' ? change.reason : `not a refusal: ${JSON.stringify(change)}`;
    };
    const refusedBefore = (replica: typeof a) => replica.changes.filter((change) => change.kind === 'refused').length;
    const [aRefused, bRefused] = [refusedBefore(a), refusedBefore(b)];
    try {
      // 1. A set of its own (everyone may delete orders), under a correct content version, made the head; the
      // signature left as it was (the previous head's).
      const sources = {
        'orders.cedar': `${ORDERS}\n@id("forged")\npermit (principal, action, resource);\n`,
        'shop.cedarschema': readFileSync(new URL('shop.cedarschema', EXAMPLE_POLICIES), 'utf8'),
      };
      const forged = policySetFromSources({
        schema: { 'shop.cedarschema': sources['shop.cedarschema'] },
        policies: { 'orders.cedar': sources['orders.cedar'] },
      }).version;
      await asDatabaseWriter(async (db) => {
        await db.query('INSERT INTO policy_sets (version, sources, applied_at, applied_by) VALUES ($1, $2, $3, $4)', [
          forged,
          JSON.stringify(sources),
          Date.now(),
          a.policy.publishedBy,
        ]);
        await db.query('UPDATE policy_head SET version = $1, seq = seq + 1 WHERE id = 1', [forged]);
        await notifyReplicas(db);
      });
      await until(() => heard(a, aRefused + 1)() && heard(b, bRefused + 1)(), 'both replicas refuse the forged set');
      for (const replica of [a, b]) {
        assert.match(lastReason(replica), new RegExp(`shared policy set ${forged} at position \\d+ .* NOT adopted`));
        assert.match(lastReason(replica), /signature is over other version, seq, sources_sha256/);
        assert.equal(replica.policy.version, inForce, 'the set in force stays');
      }
      assert.deepEqual(await b.policy.bundleFor('orders'), bundle, 'guards are pushed nothing new');

      // 2. No signature at all, at the next position.
      await asDatabaseWriter(async (db) => {
        await db.query("UPDATE policy_head SET signature = '', seq = seq + 1 WHERE id = 1");
        await notifyReplicas(db);
      });
      await until(() => heard(a, aRefused + 2)() && heard(b, bRefused + 2)(), 'the unsigned head refused');
      assert.match(lastReason(b), /NOT adopted: it is not signed/);

      // 3. Signed right, by a key that is not the replicas' (a replica without the shared keys, or an outsider).
      const otherKey = await openSigningKey(join(scratch, 'other-keys'), 'policy');
      await asDatabaseWriter(async (db) => {
        const { rows } = await db.query<{ seq: string; applied_at: string; applied_by: string }>(
          'SELECT h.seq, s.applied_at, s.applied_by FROM policy_head h JOIN policy_sets s USING (version)',
        );
        const row = rows[0] as { seq: string; applied_at: string; applied_by: string };
        const next = { version: forged, sources, appliedAt: Number(row.applied_at), appliedBy: row.applied_by };
        const signature = await signPolicyHead({ ...next, seq: Number(row.seq) + 1 }, otherKey);
        await db.query('UPDATE policy_head SET signature = $1, seq = seq + 1 WHERE id = 1', [signature]);
        await notifyReplicas(db);
      });
      await until(() => heard(a, aRefused + 3)() && heard(b, bRefused + 3)(), 'the head signed by another key refused');
      assert.match(
        lastReason(b),
        new RegExp(`signed by another policy key \\(${otherKey.kid}, not ${signingKey.kid}:`),
      );

      assert.equal(a.policy.version, inForce);
      assert.equal(b.policy.version, inForce);
      // B serves guards (a control plane): its refusals are admin events, as every policy change is.
      await until(() => refusals.length >= 3, "B's refusals as admin events");
      assert.ok(
        refusals.every((event) => event.reason === 'LOCKSTEP_POLICY_REFUSED' && event.resource === inForce),
        'each refusal is an admin event that names the set kept',
      );
      // A replica starting now refuses it too, and has no policy rather than the forged one.
      const fresh = await replicaPolicy(policyDir('f'), {}, false);
      assert.equal(fresh.policy.version, null);
      assert.match(fresh.policy.lastRefusal?.reason ?? '', /NOT adopted: it is signed by another policy key/);
    } finally {
      stopListening();
    }

    // Saving the set in force in a policy directory publishes it over the refused head, signed: all adopt it.
    const head = await a.store.policyHead();
    const inForceSources = await asDatabaseWriter(async (db) => {
      const { rows } = await db.query<{ sources: string }>('SELECT sources FROM policy_sets WHERE version = $1', [
        inForce,
      ]);
      return JSON.parse(rows[0]?.sources ?? '{}') as Record<string, string>;
    });
    for (const [file, text] of Object.entries(inForceSources)) writeFileSync(join(dirA(), file), text);
    const republished = await a.policy.reload();
    assert.equal(republished.kind, 'applied');
    const after = await a.store.policyHead();
    const byA = `${hostname()}:${dirA()}`;
    assert.deepEqual([after?.version, after?.seq, after?.appliedBy], [inForce, (head?.seq ?? 0) + 1, byA]);
    await until(() => b.policy.publishedBy === byA, 'B adopts it');
    assert.equal(b.policy.version, inForce);
    const restarted = await replicaPolicy(policyDir('g'), {}, false);
    assert.equal(restarted.policy.version, inForce, 'a replica starting now adopts it');
    assert.equal(restarted.policy.lastRefusal, null);
  });

  it('refuses an older signed head restored over a newer one; a restart forgets what it had seen', async () => {
    const backup = await asDatabaseWriter(readHeadRow);
    const before = a.policy.version;
    writeFileSync(join(dirA(), 'orders.cedar'), withPolicy('after-the-backup'));
    await until(() => a.policy.version !== before && b.policy.version === a.policy.version, 'A published, B applied');
    const inForce = a.policy.version;
    const newest = await asDatabaseWriter(readHeadRow);
    assert.ok(Number(newest?.seq) > Number(backup?.seq));

    const refusedBefore = b.changes.length;
    await asDatabaseWriter(async (db) => {
      await db.query('UPDATE policy_head SET version = $1, seq = $2, signature = $3 WHERE id = 1', [
        backup?.version,
        backup?.seq,
        backup?.signature,
      ]);
      await notifyReplicas(db);
    });
    await until(() => b.changes.length > refusedBefore, 'B refuses the restored head');
    const refusal = b.changes.at(-1);
    assert.equal(refusal?.kind, 'refused');
    assert.match(
      refusal?.kind === 'refused' ? refusal.reason : '',
      new RegExp(
        `at position ${backup?.seq} .* NOT adopted: this replica has seen position ${newest?.seq} already, .* rollback`,
      ),
    );
    await until(() => /rollback/.test(a.policy.lastRefusal?.reason ?? ''), 'A refuses it too');
    assert.equal(a.policy.version, inForce);
    assert.equal(b.policy.version, inForce);

    // Nor does an edit publish behind the position seen: every replica that saw it would refuse it.
    const seen = a.changes.length;
    writeFileSync(join(dirA(), 'orders.cedar'), withPolicy('after-the-restore'));
    await until(() => a.changes.length > seen, "A's refusal of its edit");
    assert.match(a.policy.lastRefusal?.reason ?? '', /NOT published: the store's policy head is at position/);
    assert.equal((await asDatabaseWriter(readHeadRow))?.signature, backup?.signature);

    // A replica started now has seen nothing newer: it adopts the restored head (the operator's decision).
    const restarted = await replicaPolicy(policyDir('h'), {}, false);
    assert.equal(restarted.policy.version, backup?.version);

    // The newest head put back: the replicas that had it carry on without a word.
    await new Promise((resolve) => setTimeout(resolve, 100)); // A's directory events all heard
    const [aChanges, bChanges] = [a.changes.length, b.changes.length];
    await asDatabaseWriter(async (db) => {
      await db.query('UPDATE policy_head SET version = $1, seq = $2, signature = $3 WHERE id = 1', [
        newest?.version,
        newest?.seq,
        newest?.signature,
      ]);
      await notifyReplicas(db);
    });
    await until(() => restarted.policy.version === inForce, 'the restarted replica adopts the newest head');
    assert.deepEqual([a.changes.length, b.changes.length], [aChanges, bChanges]);
  });
});
