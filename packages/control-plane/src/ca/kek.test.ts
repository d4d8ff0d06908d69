import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { chmodSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { inspect } from 'node:util';
import { after, describe, it } from 'node:test';
import { createKekText, KekError, parseKek, readKek } from './kek.ts';
import { KeyPermissionError } from './key-files.ts';

const scratch = mkdtempSync(join(tmpdir(), 'lockstep-kek-'));
after(() => rmSync(scratch, { recursive: true, force: true }));

const KEY_1 = randomBytes(32).toString('base64url');
const KEY_2 = randomBytes(32).toString('base64url');
const TWO_LINES = `# rotated in June\nk2 ${KEY_2}\n\n   # the old one, decrypt only\nk1 ${KEY_1}\n`;

function kekFile(name: string, text: string, mode: number): string {
  const path = join(scratch, name);
  writeFileSync(path, text, { mode });
  chmodSync(path, mode);
  return path;
}

function refusal(code: KekError['code'], pattern: RegExp) {
  return (error: unknown) => {
    assert.ok(error instanceof KekError, `a KekError, not ${String(error)}`);
    assert.equal(error.code, code);
    assert.match(error.message, pattern);
    assert.doesNotMatch(error.message, new RegExp(`${KEY_1}|${KEY_2}`), 'a message never shows a key');
    return true;
  };
}

describe('readKek', () => {
  it('gives none when the environment names none', () => {
    assert.equal(readKek({}), null);
    assert.equal(readKek({ LOCKSTEP_KEK_FILE: '', LOCKSTEP_KEK: '' }), null);
  });

  it('reads LOCKSTEP_KEK: the first line encrypts, every line decrypts; blanks and comments are skipped', async () => {
    const kek = readKek({ LOCKSTEP_KEK: TWO_LINES });
    assert.ok(kek);
    assert.equal(kek.activeId, 'k2');
    const dek = randomBytes(32);
    const wrapped = await kek.wrap(dek, 'lockstep/v1/s/ring/0/k2');
    assert.equal(wrapped.kekId, 'k2');
    assert.deepEqual(await kek.unwrap('k2', wrapped.wrapped, 'lockstep/v1/s/ring/0/k2'), dek);

    const old = parseKek(`k1 ${KEY_1}`, 'test');
    const byOld = await old.wrap(dek, 'aad');
    assert.deepEqual(await kek.unwrap('k1', byOld.wrapped, 'aad'), dek, 'a later line still decrypts');
  });

  it('reads a file of mode 0600 or 0400', () => {
    for (const mode of [0o600, 0o400]) {
      const kek = readKek({ LOCKSTEP_KEK_FILE: kekFile(`kek-${mode.toString(8)}`, TWO_LINES, mode) });
      assert.equal(kek?.activeId, 'k2');
    }
  });

  it('refuses a file others (or its group) may read, with the command that fixes it', () => {
    for (const mode of [0o644, 0o640, 0o604, 0o700, 0o660]) {
      const path = kekFile(`wide-${mode.toString(8)}`, TWO_LINES, mode);
      assert.throws(
        () => readKek({ LOCKSTEP_KEK_FILE: path }),
        (error: unknown) =>
          error instanceof KeyPermissionError &&
          error.code === 'LOCKSTEP_CP_KEY_PERMISSIONS' &&
          error.message.includes(`chmod 600 ${JSON.stringify(path)}`) &&
          error.message.includes(mode.toString(8)),
      );
    }
  });

  it('refuses a missing file, and both variables at once', () => {
    assert.throws(
      () => readKek({ LOCKSTEP_KEK_FILE: join(scratch, 'absent') }),
      refusal('LOCKSTEP_KEK_INVALID', /absent, which does not exist/),
    );
    assert.throws(
      () => readKek({ LOCKSTEP_KEK_FILE: kekFile('both', TWO_LINES, 0o600), LOCKSTEP_KEK: TWO_LINES }),
      refusal('LOCKSTEP_KEK_INVALID', /set one of them/),
    );
  });

  it('refuses malformed text, naming the line and the fix, never the key', () => {
    const cases: [string, RegExp][] = [
      ['# nothing but a comment\n\n', /holds no key: give a line "<kek-id> <key>"/],
      [KEY_1, /line 1: .*two fields .* it has 1\. Fix: make one with node -e/],
      [`k1 ${KEY_1} extra`, /line 1: .*it has 3/],
      [`\n\nk1 ${KEY_1.slice(0, 40)}`, /line 3: the key of k1 is not base64url of exactly 32 bytes/],
      [`k1 ${randomBytes(33).toString('base64url')}`, /not base64url of exactly 32 bytes/],
      [`k1 ${randomBytes(32).toString('base64')}+/`, /not base64url of exactly 32 bytes/],
      [`k1 ${KEY_1}\nk1 ${KEY_2}`, /line 2: key-encryption key k1 is given twice/],
      [`-k1 ${KEY_1}`, /line 1: a key-encryption key id is 1 to 64/],
    ];
    for (const [text, pattern] of cases) {
      assert.throws(() => readKek({ LOCKSTEP_KEK: text }), refusal('LOCKSTEP_KEK_INVALID', pattern), text);
    }
    const path = kekFile('malformed', `k1 ${KEY_1}\nk2`, 0o600);
    assert.throws(
      () => readKek({ LOCKSTEP_KEK_FILE: path }),
      refusal('LOCKSTEP_KEK_INVALID', new RegExp(`LOCKSTEP_KEK_FILE ${path}, line 2`)),
    );
  });

  it('answers LOCKSTEP_KEK_MISMATCH, naming the KEK, for an unknown id or a wrap that does not open', async () => {
    const kek = parseKek(TWO_LINES, 'test');
    const { wrapped } = await kek.wrap(randomBytes(32), 'lockstep/v1/s/ring/3/k2');
    await assert.rejects(
      kek.unwrap('k9', wrapped, 'lockstep/v1/s/ring/3/k9'),
      refusal('LOCKSTEP_KEK_MISMATCH', /sealed under key-encryption key k9, .*give that key in LOCKSTEP_KEK_FILE/),
    );
    await assert.rejects(
      kek.unwrap('k1', wrapped, 'lockstep/v1/s/ring/3/k2'),
      refusal('LOCKSTEP_KEK_MISMATCH', /sealed under key-encryption key k1/),
    );
    await assert.rejects(kek.unwrap('k2', wrapped, 'lockstep/v1/s/ring/4/k2'), refusal('LOCKSTEP_KEK_MISMATCH', /k2/));
    const tampered = Buffer.from(wrapped, 'base64url');
    tampered[20] = (tampered[20] ?? 0) ^ 1;
    await assert.rejects(
      kek.unwrap('k2', tampered.toString('base64url'), 'lockstep/v1/s/ring/3/k2'),
      refusal('LOCKSTEP_KEK_MISMATCH', /k2/),
    );
    await assert.rejects(kek.unwrap('k2', 'AAAA', 'lockstep/v1/s/ring/3/k2'), refusal('LOCKSTEP_KEK_MISMATCH', /k2/));
  });

  it('wraps each time differently (a random IV), and shows no key when inspected', async () => {
    const kek = parseKek(TWO_LINES, 'test');
    const dek = randomBytes(32);
    const [a, b] = [await kek.wrap(dek, 'aad'), await kek.wrap(dek, 'aad')];
    assert.notEqual(a.wrapped, b.wrapped);
    const shown = inspect(kek, { depth: 10, showHidden: true });
    assert.doesNotMatch(shown, new RegExp(`${KEY_1}|${KEY_2}`));
  });
});

describe('createKekText', () => {
  it('makes a fresh line that reads back, a new key each time', () => {
    const line = createKekText('k7');
    assert.match(line, /^k7 [A-Za-z0-9_-]{43}\n$/);
    assert.notEqual(createKekText('k7'), line);
    assert.equal(parseKek(line, 'test').activeId, 'k7');
    const named = parseKek(createKekText(), 'test').activeId;
    assert.match(named, /^kek-\d{4}-\d{2}-\d{2}-[0-9a-f]{4}$/);
    assert.throws(() => createKekText('has space'), TypeError);
  });
});
