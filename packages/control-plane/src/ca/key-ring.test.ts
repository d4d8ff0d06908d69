import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { openCookieKeys } from '../idp/identity-provider.ts';
import { openKeyRing, type KeyRing, type Rotation } from './key-ring.ts';
import { openSigningKey } from './signing-key.ts';
import { sharedMemoryVault } from './test-support.ts';

const scratch = mkdtempSync(join(tmpdir(), 'lockstep-ring-'));
after(() => rmSync(scratch, { recursive: true, force: true }));

describe('key ring', () => {
  it('publishes the next key before it signs, keeps the previous one for retainMs, then drops it', async () => {
    let now = 1_000_000;
    const dir = join(scratch, 'a');
    const created: string[] = [];
    const ring = await openKeyRing(dir, 'txn-token', {
      retainMs: 60_000,
      now: () => now,
      onCreated: (message) => created.push(message),
    });
    assert.match(created[0] ?? '', /NEW txn-token signing keys .*development material/);
    assert.equal(statSync(join(dir, 'txn-token-keys.json')).mode & 0o777, 0o600);
    const [current, next] = ring.publicJwks().keys.map((key) => key.kid);
    assert.equal(ring.current().kid, current);
    assert.ok(ring.publicJwks().keys.every((key) => key.d === undefined && key.alg === 'ES256'));

    const rotation = await ring.rotate();
    assert.equal(rotation.current, next);
    assert.equal(ring.current().kid, next, 'the published next key signs now');
    assert.deepEqual(
      ring.publicJwks().keys.map((key) => key.kid),
      [next, rotation.next, current],
      'current, next, previous',
    );

    const reopened = await openKeyRing(dir, 'txn-token', { retainMs: 60_000, now: () => now });
    assert.deepEqual(
      reopened.publicJwks().keys.map((key) => key.kid),
      [next, rotation.next, current],
      'survives a restart',
    );

    now += 60_001;
    assert.deepEqual(
      ring.publicJwks().keys.map((key) => key.kid),
      [next, rotation.next],
      'the previous key is gone once its tokens have expired',
    );
    const later = await ring.rotate();
    assert.deepEqual(later.dropped, [current]);
  });

  it('takes over a single signing key from before rotation existed, as the current key', async () => {
    const dir = join(scratch, 'b');
    const legacy = await openSigningKey(dir, 'txn-token');
    const ring = await openKeyRing(dir, 'txn-token', { retainMs: 60_000 });
    assert.equal(ring.current().kid, legacy.kid);
  });
});

async function until(condition: () => boolean): Promise<void> {
  for (let waited = 0; !condition(); waited += 5) {
    if (waited > 2_000) assert.fail('the replicas did not agree within 2 s');
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
}

/** The next rotation `ring` hears of (its own, or one another replica wrote). */
function nextRotation(ring: KeyRing): Promise<Rotation> {
  return new Promise((resolve) => {
    const stop = ring.onRotate((rotation) => {
      stop();
      resolve(rotation);
    });
  });
}

function ringDocument(vault: ReturnType<typeof sharedMemoryVault>, name: string) {
  const document = vault.documents.get(`${name}-keys.json`);
  assert.ok(document, `${name}-keys.json is in the vault`);
  const { keys } = JSON.parse(document.text) as { keys: { role: string }[] };
  return { generation: document.generation, roles: keys.map((key) => key.role).sort() };
}

describe('key ring shared by replicas (one vault)', () => {
  const options = { retainMs: 3_600_000 };

  it('two replicas opening an empty vault at once end with one ring, created once', async () => {
    const vault = sharedMemoryVault();
    const created: string[] = [];
    const onCreated = (message: string) => created.push(message);
    const [a, b] = await Promise.all([
      openKeyRing(vault.replica(), 'txn-token', { ...options, onCreated }),
      openKeyRing(vault.replica(), 'txn-token', { ...options, onCreated }),
    ]);
    assert.equal(created.length, 1, "the replica that lost the race uses the first one's keys");
    assert.deepEqual(b.publicJwks(), a.publicJwks());
    assert.equal(b.current().kid, a.current().kid);
    a.close();
    b.close();
  });

  it("follows another replica's rotation: the new key signs here too, and onRotate fires", async () => {
    const vault = sharedMemoryVault();
    const a = await openKeyRing(vault.replica(), 'idp', options);
    const b = await openKeyRing(vault.replica(), 'idp', options);
    let heardByA = 0;
    a.onRotate(() => (heardByA += 1));
    const heard = nextRotation(b);
    const rotation = await a.rotate();
    assert.deepEqual(await heard, rotation, 'B describes the change as A made it');
    assert.equal(b.current().kid, rotation.current);
    assert.deepEqual(b.publicJwks(), a.publicJwks());
    assert.equal(heardByA, 1, 'A hears its own rotation once');

    b.close();
    await a.rotate();
    await new Promise((resolve) => setTimeout(resolve, 20));
    assert.equal(b.current().kid, rotation.current, 'a closed ring follows no more');
    a.close();
  });

  it('two replicas rotating at once both succeed, in turn: one current and one next key in the end', async () => {
    const vault = sharedMemoryVault();
    const a = await openKeyRing(vault.replica(), 'txn-token', options);
    const b = await openKeyRing(vault.replica(), 'txn-token', options);
    const first = a.current().kid;
    const heard = new Map<KeyRing, Rotation[]>([
      [a, []],
      [b, []],
    ]);
    for (const [ring, rotations] of heard) ring.onRotate((rotation) => rotations.push(rotation));
    const [byA, byB] = await Promise.all([a.rotate(), b.rotate()]);
    // Whichever wrote first, the other one's rotation was redone on the ring it found.
    const [won, lost, loser] = byA.retired === first ? [byA, byB, b] : [byB, byA, a];
    assert.equal(won.retired, first);
    assert.equal(lost.retired, won.current);
    assert.deepEqual(
      heard.get(loser)?.map((rotation) => rotation.current),
      [won.current, lost.current],
      'the replica that lost the write heard the other rotation (found when it reloaded), then its own',
    );
    await until(() => a.current().kid === lost.current && b.current().kid === lost.current);
    assert.deepEqual(a.publicJwks(), b.publicJwks());
    assert.deepEqual(ringDocument(vault, 'txn-token'), {
      generation: 2,
      roles: ['current', 'next', 'previous', 'previous'],
    });
    a.close();
    b.close();
  });

  it('a signing key and the cookie secret opened by two replicas at once are one key and one secret', async () => {
    const vault = sharedMemoryVault();
    const [a, b] = await Promise.all([
      openSigningKey(vault.replica(), 'policy'),
      openSigningKey(vault.replica(), 'policy'),
    ]);
    assert.equal(b.kid, a.kid);
    const created: string[] = [];
    const [cookieA, cookieB] = await Promise.all([
      openCookieKeys(vault.replica(), (message) => created.push(message)),
      openCookieKeys(vault.replica(), (message) => created.push(message)),
    ]);
    assert.deepEqual(cookieB, cookieA);
    assert.equal(created.length, 1);
  });
});
