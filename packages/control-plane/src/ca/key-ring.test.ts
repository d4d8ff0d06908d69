import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { openKeyRing } from './key-ring.ts';
import { openSigningKey } from './signing-key.ts';

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
