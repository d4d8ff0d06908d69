import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { describe, it } from 'node:test';
import { catalogue } from './index.ts';

describe('the catalogue', () => {
  it('has unique ids, a standard for every entry, and the README lists exactly these attacks', () => {
    const ids = catalogue.map((attack) => attack.id);
    assert.equal(new Set(ids).size, ids.length);
    for (const attack of catalogue) {
      assert.match(attack.id, /^(transport|txn|authz|input)\.[a-z0-9-]+$/);
      assert.ok(attack.cwe.length > 0 && attack.cwe.every((cwe) => /^CWE-\d+$/.test(cwe)), attack.id);
      assert.ok(attack.title.length > 0 && attack.description.length > 0 && attack.enforced.length > 0, attack.id);
    }
    const readme = readFileSync(new URL('../../README.md', import.meta.url), 'utf8');
    const listed = [...readme.matchAll(/^\| `([a-z0-9.-]+)` \|/gm)].map((match) => match[1]);
    assert.deepEqual(listed, ids);
  });

  it('covers every category the issue names', () => {
    for (const id of [
      'transport.plaintext',
      'txn.user-token',
      'txn.foreign-trust-domain',
      'txn.revoked-sub',
      'txn.revoked-txn',
      'authz.bola',
      'authz.function-level',
      'authz.unlisted-caller',
      'input.schema-bypass',
    ]) {
      assert.ok(
        catalogue.some((attack) => attack.id === id),
        id,
      );
    }
  });
});
