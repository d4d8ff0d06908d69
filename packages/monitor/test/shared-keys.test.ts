/**
 * Replicas share one identity (issue 17, item 1): two control planes on one PostgreSQL database, each
 * with its own key directory, given the same key-encryption key. They issue SVIDs from one CA, sign
 * with one set of key rings, and follow each other's rotations; a replica given another KEK refuses to
 * start. What a control plane kept in its key directory before is imported once. Each remembers the newest
 * key generations it has seen in its key directory: a rollback made while it was down refuses its restart. The policy is shared (signed
 * with the shared policy key) only with the keys: without a KEK it stays per replica. Real PostgreSQL, real
 * TLS, real keys: the two replicas are what `lockstep control-plane --postgres … --kek-file …` runs.
 */
import assert from 'node:assert/strict';
import { X509Certificate } from 'node:crypto';
import { cpSync, mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import pg from 'pg';
import { request } from 'undici';
import { testPostgres } from '@lockstep/testkit';
import { joinControlPlane, renewWithControlPlane } from '@lockstep/workload';
import { createJoinToken, createKekText, parseKek, type Kek } from '@lockstep/control-plane';
import { assembleControlPlane, openControlPlaneKeys, type AssembledControlPlane } from '../src/index.ts';

const TD = 'shop.test';
const EXAMPLE_POLICIES = new URL('../../guard/example/policies/', import.meta.url);
const postgres = await testPostgres();
const scratch = mkdtempSync(join(tmpdir(), 'lockstep-shared-keys-'));
const schema = postgres.schema();
const kek: Kek = parseKek(createKekText('kek-test-1'), 'the test');
const warnings: string[] = [];
const running: AssembledControlPlane[] = [];
let a: AssembledControlPlane;
let b: AssembledControlPlane;
/** The CA root of the key directory replica A ran with alone, before it had replicas. */
let rootBefore: string;

function replica(name: string, key: Kek = kek, inSchema = schema): Promise<AssembledControlPlane> {
  return assembleControlPlane({
    trustDomain: TD,
    keyDir: join(scratch, name),
    store: { postgres: postgres.url, schema: inSchema },
    kek: key,
    output: { warning: (text) => warnings.push(`${name}: ${text}`), error: () => {} },
  });
}

async function until(check: () => boolean | Promise<boolean>, what: string, limitMs = 1_000): Promise<number> {
  const started = Date.now();
  while (!(await check())) {
    if (Date.now() - started > limitMs) assert.fail(`${what} within ${limitMs} ms`);
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
  return Date.now() - started;
}

async function fetchText(url: string): Promise<string> {
  // The bundle is public; a replica's certificate is checked by the workload code in the tests below.
  const { Agent } = await import('undici');
  const dispatcher = new Agent({ connect: { rejectUnauthorized: false } });
  try {
    return await (await request(url, { dispatcher })).body.text();
  } finally {
    await dispatcher.close();
  }
}

describe('replicas share one identity (PostgreSQL, one key-encryption key)', { skip: postgres.skip }, () => {
  before(async () => {
    // A ran alone with its keys in files; its first start with a KEK moves them into the database.
    const alone = await openControlPlaneKeys(TD, join(scratch, 'a'));
    rootBefore = alone.ca.bundlePem;
    alone.ca.close();
    a = await replica('a');
    running.push(a);
    b = await replica('b');
    running.push(b);
  });

  after(async () => {
    for (const server of running) await server.close();
    rmSync(scratch, { recursive: true, force: true });
    await postgres.cleanup();
  });

  it("imports the keys A had in files, and B uses them: one CA, B's /v1/bundle is A's", async () => {
    assert.equal(a.bundlePem, rootBefore, 'the CA A had alone is the shared one');
    assert.ok(
      warnings.some((line) => line.startsWith('a: imported') && line.includes('ca.json')),
      warnings.join('\n'),
    );
    assert.match(readFileSync(join(scratch, 'a', 'MOVED-TO-VAULT.txt'), 'utf8'), /were moved into PostgreSQL/);
    assert.equal(await fetchText(`${b.url}/v1/bundle`), rootBefore);
    assert.deepEqual(b.auditKeys.publicJwks(), a.auditKeys.publicJwks(), 'one audit ring: checkpoints verify anywhere');
  });

  it('an SVID issued through A verifies against B, and renews at B', async () => {
    const { token } = await createJoinToken(a.store, a.ca, { service: 'orders', createdBy: 'test' });
    const joined = await joinControlPlane({ url: a.url, trustDomain: TD, joinToken: token, service: 'orders' });
    const leaf = new X509Certificate(joined.chainPem);
    const intermediate = new X509Certificate(b.ca.intermediatePem);
    assert.ok(leaf.verify(intermediate.publicKey), "signed by B's intermediate: the same CA");
    // mTLS to B with A's SVID, B's certificate checked against the bundle A handed out.
    const renewed = await renewWithControlPlane({
      url: b.url,
      trustDomain: TD,
      current: { chainPem: joined.chainPem, keyPem: joined.keyPem },
      bundlePem: joined.bundlePem,
    });
    assert.equal(renewed.spiffeId, `spiffe://${TD}/svc/orders`);
  });

  it('a Txn-Token key rotated through A signs at B within a second', async () => {
    const rotation = await a.tts.rotateKeys?.();
    assert.ok(rotation !== undefined);
    const tookMs = await until(async () => {
      const jwks = JSON.parse(await fetchText(`${b.url}/v1/txn-token/jwks.json`)) as { keys: { kid: string }[] };
      return jwks.keys[0]?.kid === rotation.current;
    }, "B's JWKS leads with the key A made current");
    assert.ok(tookMs < 1_000);
    assert.ok(
      b.tts.jwks.keys.some((key) => key.kid === rotation.next),
      'and publishes the new next key',
    );
  });

  it('a root rotation prepared and activated through A is followed by B', async () => {
    const bundleChanges: string[] = [];
    const stop = b.ca.onBundleChange(() => bundleChanges.push(b.ca.bundlePem));
    try {
      await a.ca.prepareRootRotation();
      await until(() => b.ca.rootRotation().phase === 'prepared', "B's CA has the next root");
      assert.equal(b.ca.bundlePem, a.ca.bundlePem, 'the two-root bundle');
      assert.ok(bundleChanges.length >= 1, "B's listeners (streams, its server certificate) were told");
      await a.ca.activateNextRoot();
      await until(() => b.ca.intermediatePem === a.ca.intermediatePem, 'B signs with the new intermediate');
    } finally {
      stop();
    }
    // An SVID B issues now chains to the new root, which A's bundle carries.
    const { token } = await createJoinToken(b.store, b.ca, { service: 'payments', createdBy: 'test' });
    const joined = await joinControlPlane({ url: b.url, trustDomain: TD, joinToken: token, service: 'payments' });
    assert.ok(new X509Certificate(joined.chainPem).verify(new X509Certificate(a.ca.intermediatePem).publicKey));
  });

  it('remembers the newest key generations it has seen: a rollback made while it was down refuses its restart', async () => {
    const own = postgres.schema();
    const scope = `${new URL(postgres.url).host}${new URL(postgres.url).pathname} schema ${own}`;
    const file = join(scratch, 'd', 'vault-generations.json');
    const d = await replica('d', kek, own);
    let rotated: number;
    try {
      await d.tts.rotateKeys?.();
      rotated = (await d.store.keyDocumentGenerations()).get('txn-token-keys.json') ?? -1;
      assert.equal(rotated, 1, 'created, then rotated once');
    } finally {
      await d.close();
    }
    assert.equal(statSync(file).mode & 0o777, 0o600);
    const remembered = (JSON.parse(readFileSync(file, 'utf8')) as { databases: Record<string, Record<string, number>> })
      .databases[scope];
    assert.equal(remembered?.['txn-token-keys.json'], rotated, JSON.stringify(remembered));

    // While it is down, a database writer deletes the rotation, to bring the retired key back.
    const client = new pg.Client({ connectionString: postgres.url });
    await client.connect();
    try {
      await client.query(`DELETE FROM ${own}.key_documents WHERE name = 'txn-token-keys.json' AND generation = $1`, [
        rotated,
      ]);
    } finally {
      await client.end();
    }
    await assert.rejects(replica('d', kek, own), (error: Error & { code?: string }) => {
      assert.equal(error.code, 'LOCKSTEP_CP_KEYS_ROLLBACK', error.message);
      assert.match(error.message, /txn-token-keys\.json went back from generation 1 to generation 0/);
      assert.ok(error.message.includes(`remove ${file}`), error.message);
      return true;
    });
  });

  it('refuses to start a replica given another key-encryption key, naming the one that sealed the keys', async () => {
    const other = parseKek(createKekText('kek-other'), 'the test');
    await assert.rejects(replica('c', other), (error: Error & { code?: string }) => {
      assert.equal(error.code, 'LOCKSTEP_KEK_MISMATCH');
      assert.match(error.message, /kek-test-1/);
      return true;
    });
  });

  it('shares the policy only with the keys: without a KEK each replica applies its own directory', async () => {
    const policyDir = join(scratch, 'policies');
    cpSync(EXAMPLE_POLICIES, policyDir, { recursive: true });
    const started = async (name: string, key: Kek | null) => {
      const said: string[] = [];
      const replica = await assembleControlPlane({
        trustDomain: TD,
        keyDir: join(scratch, name),
        store: { postgres: postgres.url, schema: postgres.schema() },
        kek: key,
        policyDir,
        watchPolicy: false,
        output: { line: (text) => said.push(text), warning: (text) => said.push(text), error: () => {} },
      });
      running.push(replica);
      return { replica, said: said.join('\n') };
    };
    const withKek = await started('policy-kek', kek);
    assert.match(withKek.said, /in force \(shared by the replicas in the store/);
    assert.equal((await withKek.replica.store.policyHead())?.version, withKek.replica.policy?.version);

    const withoutKek = await started('policy-no-kek', null);
    assert.match(withoutKek.said, /the policy is per replica too/);
    assert.match(withoutKek.said, /in force \(from /);
    assert.equal(await withoutKek.replica.store.policyHead(), null, 'nothing published');
  });
});
