import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { describe, it } from 'node:test';
import { KekError, parseKek } from './kek.ts';
import { KeyDocumentError, open, rewrap, seal, type SealedDocument } from './sealed.ts';

const OLD = `k1 ${randomBytes(32).toString('base64url')}`;
const NEW = `k2 ${randomBytes(32).toString('base64url')}`;
const kek = parseKek(OLD, 'test');
const TEXT = '{"version":1,"keys":[{"role":"current","jwk":{"d":"secret"}}]}';

const sealedRing = () => seal({ schema: 'lockstep', name: 'txn-token-keys.json', generation: 3, text: TEXT }, kek);

function refused(code: 'LOCKSTEP_KEK_MISMATCH' | 'LOCKSTEP_CP_KEYS_DAMAGED') {
  return (error: unknown) => {
    assert.ok(error instanceof KekError || error instanceof KeyDocumentError, String(error));
    assert.equal(error.code, code);
    return true;
  };
}

/** One base64url field with one bit flipped at byte `index` (negative: from the end). */
function flip(field: string, index: number): string {
  const bytes = Buffer.from(field, 'base64url');
  const at = index < 0 ? bytes.length + index : index;
  bytes[at] = (bytes[at] ?? 0) ^ 0x01;
  return bytes.toString('base64url');
}

describe('sealed key documents', () => {
  it('round-trip, each seal with a data key and IV of its own, the text nowhere in clear', async () => {
    const [a, b] = [await sealedRing(), await sealedRing()];
    assert.deepEqual(
      { name: a.name, generation: a.generation, kekId: a.kekId },
      { name: 'txn-token-keys.json', generation: 3, kekId: 'k1' },
    );
    assert.equal(await open(a, 'lockstep', kek), TEXT);
    assert.notEqual(a.sealed, b.sealed);
    assert.notEqual(a.wrappedDek, b.wrappedDek);
    assert.equal(Buffer.from(a.wrappedDek, 'base64url').length, 12 + 32 + 16);
    assert.equal(Buffer.from(a.sealed, 'base64url').length, 12 + Buffer.byteLength(TEXT) + 16);
    assert.doesNotMatch(JSON.stringify(a), /secret|version/);
  });

  it('refuse a row that was altered, moved or relabelled, or a wrong key-encryption key', async () => {
    const document = await sealedRing();
    const cases: [string, SealedDocument, string, Parameters<typeof refused>[0]][] = [
      ['the IV altered', { ...document, sealed: flip(document.sealed, 0) }, 'lockstep', 'LOCKSTEP_CP_KEYS_DAMAGED'],
      ['the text altered', { ...document, sealed: flip(document.sealed, 20) }, 'lockstep', 'LOCKSTEP_CP_KEYS_DAMAGED'],
      ['the tag altered', { ...document, sealed: flip(document.sealed, -1) }, 'lockstep', 'LOCKSTEP_CP_KEYS_DAMAGED'],
      ['the text cut short', { ...document, sealed: 'AAAA' }, 'lockstep', 'LOCKSTEP_CP_KEYS_DAMAGED'],
      [
        'the data key altered',
        { ...document, wrappedDek: flip(document.wrappedDek, 30) },
        'lockstep',
        'LOCKSTEP_KEK_MISMATCH',
      ],
      ['moved to another name', { ...document, name: 'policy.key' }, 'lockstep', 'LOCKSTEP_KEK_MISMATCH'],
      ['moved to another generation', { ...document, generation: 4 }, 'lockstep', 'LOCKSTEP_KEK_MISMATCH'],
      ['rolled back a generation', { ...document, generation: 2 }, 'lockstep', 'LOCKSTEP_KEK_MISMATCH'],
      ['read in another schema', document, 'tenant_b', 'LOCKSTEP_KEK_MISMATCH'],
      ['relabelled with another KEK', { ...document, kekId: 'k2' }, 'lockstep', 'LOCKSTEP_KEK_MISMATCH'],
    ];
    for (const [what, altered, schema, code] of cases) {
      await assert.rejects(open(altered, schema, kek), refused(code), what);
    }
    // The sealed text of another document, under this one's data key.
    const other = await seal({ schema: 'lockstep', name: 'txn-token-keys.json', generation: 3, text: 'other' }, kek);
    await assert.rejects(
      open({ ...document, sealed: other.sealed }, 'lockstep', kek),
      refused('LOCKSTEP_CP_KEYS_DAMAGED'),
    );
    // Another KEK under the same id.
    const impostor = parseKek(`k1 ${randomBytes(32).toString('base64url')}`, 'test');
    await assert.rejects(open(document, 'lockstep', impostor), (error: unknown) => {
      assert.ok(error instanceof KekError && error.code === 'LOCKSTEP_KEK_MISMATCH');
      assert.match(error.message, /sealed under key-encryption key k1.*give that key in LOCKSTEP_KEK_FILE/);
      assert.equal(error.kekId, 'k1');
      return true;
    });
    // A KEK that lacks the id altogether.
    await assert.rejects(open(document, 'lockstep', parseKek(NEW, 'test')), (error: unknown) => {
      assert.ok(error instanceof KekError && error.code === 'LOCKSTEP_KEK_MISMATCH');
      assert.match(error.message, /sealed under key-encryption key k1, which is not among the keys given \(k2\)/);
      return true;
    });
  });

  it('rotate their KEK: a later line decrypts, rewrap moves the data key to the first line only', async () => {
    const document = await sealedRing();
    const rotated = parseKek(`${NEW}\n${OLD}`, 'test');
    assert.equal(await open(document, 'lockstep', rotated), TEXT, 'the old KEK, now on line 2, still decrypts');

    const rewrapped = await rewrap(document, 'lockstep', rotated);
    assert.equal(rewrapped.kekId, 'k2');
    assert.equal(rewrapped.sealed, document.sealed, 'the text is not touched');
    assert.equal(rewrapped.generation, document.generation);
    assert.notEqual(rewrapped.wrappedDek, document.wrappedDek);
    assert.equal(await open(rewrapped, 'lockstep', parseKek(NEW, 'test')), TEXT, 'the old KEK can go');
    await assert.rejects(open(rewrapped, 'lockstep', kek), refused('LOCKSTEP_KEK_MISMATCH'));
    assert.equal(await rewrap(rewrapped, 'lockstep', rotated), rewrapped, 'already under the active KEK');
    // New documents are sealed under the first line.
    assert.equal((await seal({ schema: 'lockstep', name: 'ca', generation: 0, text: 'x' }, rotated)).kekId, 'k2');
    // A damaged document is found at rewrap, while the old KEK is still there.
    await assert.rejects(
      rewrap({ ...document, sealed: flip(document.sealed, 20) }, 'lockstep', rotated),
      refused('LOCKSTEP_CP_KEYS_DAMAGED'),
    );
  });

  it('refuse names, generations and schemas that the binding cannot carry', async () => {
    const base = { schema: 'lockstep', name: 'ca', generation: 0, text: 'x' };
    await assert.rejects(seal({ ...base, name: '../ca' }, kek), TypeError);
    await assert.rejects(seal({ ...base, generation: -1 }, kek), TypeError);
    await assert.rejects(seal({ ...base, generation: 1.5 }, kek), TypeError);
    await assert.rejects(seal({ ...base, schema: 'a/b' }, kek), TypeError);
  });
});
