import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { generatePassword, hashPassword, needsRehash, passwordProblem, verifyPassword } from './passwords.ts';

describe('password policy', () => {
  it('asks for length, not composition: 12 characters of anything that is not common', () => {
    assert.match(String(passwordProblem('Tr0ub4dor&3')), /at least 12 characters \(this one has 11\)/);
    assert.equal(passwordProblem('plain lowercase words'), null, 'no digits or symbols needed');
    assert.equal(passwordProblem('ünïcödé pässwörd'), null, 'any characters');
    assert.match(String(passwordProblem('x'.repeat(257))), /at most 256/);
    assert.match(
      String(passwordProblem('🔑'.repeat(11))),
      /this one has 11/,
      'length counts characters, not UTF-16 units',
    );
  });

  it('refuses passwords from the bundled common-password list in any letter case', () => {
    for (const common of ['qwerty123456', 'QWERTY123456', '1q2w3e4r5t6y', 'password1234'])
      assert.match(String(passwordProblem(common)), /commonly used passwords/, common);
  });

  it('refuses a password containing the user name', () => {
    assert.match(String(passwordProblem('my name is Alice, hello', 'alice')), /user name/);
  });

  it('generates passwords that pass the policy', () => {
    for (let index = 0; index < 20; index += 1) assert.equal(passwordProblem(generatePassword()), null);
    // For a user too: a short name turns up in random strings (one letter: in about half of them).
    for (let index = 0; index < 50; index += 1) {
      for (const username of ['a', 'ops'])
        assert.equal(passwordProblem(generatePassword(username), username), null, username);
    }
  });
});

describe('password hashes (scrypt)', () => {
  it('verifies the right password only, with a fresh salt each time', async () => {
    const first = await hashPassword('purple monkey dishwasher');
    const second = await hashPassword('purple monkey dishwasher');
    assert.notEqual(first, second);
    assert.match(first, /^scrypt\$17\$8\$1\$/);
    assert.equal(await verifyPassword('purple monkey dishwasher', first), true);
    assert.equal(await verifyPassword('purple monkey dishwasheR', first), false);
    assert.equal(needsRehash(first), false);
  });

  it('never matches a malformed or absurd-cost hash, and flags weaker hashes for re-hashing', async () => {
    assert.equal(await verifyPassword('anything at all', 'plaintext'), false);
    assert.equal(
      await verifyPassword('anything at all', 'scrypt$40$8$1$AAAAAAAAAAAAAAAAAAAAAA$AAAAAAAAAAAAAAAAAAAAAA'),
      false,
    );
    const weak = await hashPassword('purple monkey dishwasher', { log2N: 12, r: 8, p: 1 });
    assert.equal(await verifyPassword('purple monkey dishwasher', weak), true);
    assert.equal(needsRehash(weak), true);
  });
});
