import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { describe, it } from 'node:test';
import { hashTrustBundle, readJoinToken } from './join-token.ts';

const HASH = 'a'.repeat(43);
const SECRET = 'B_-9'.repeat(10) + 'xyz';

describe('join token format', () => {
  it('reads the bundle hash and the secret of ljt1.<hash>.<secret>', () => {
    assert.deepEqual(readJoinToken(`ljt1.${HASH}.${SECRET}`), { bundleHash: HASH, secret: SECRET });
  });

  it('reads nothing else: another version, a short part, an extra part, a character outside base64url, no string', () => {
    for (const token of [
      `ljt2.${HASH}.${SECRET}`,
      `ljt1.${HASH.slice(1)}.${SECRET}`,
      `ljt1.${HASH}.${SECRET}.x`,
      `ljt1.${HASH}.${SECRET.slice(1)}=`,
      ` ljt1.${HASH}.${SECRET}`,
      42,
      null,
    ]) {
      assert.equal(readJoinToken(token), null, String(token));
    }
  });

  it("hashes a bundle as SHA-256 over its certificates' DER in order", () => {
    const one = new Uint8Array([1, 2, 3]);
    const two = new Uint8Array([4, 5]);
    assert.equal(
      hashTrustBundle([one, two]),
      createHash('sha256')
        .update(new Uint8Array([1, 2, 3, 4, 5]))
        .digest('base64url'),
    );
    assert.notEqual(hashTrustBundle([two, one]), hashTrustBundle([one, two]), 'the order counts');
  });
});
