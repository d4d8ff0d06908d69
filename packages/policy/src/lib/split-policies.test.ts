import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { lineAt } from './scan-cedar.ts';
import { splitPolicies } from './split-policies.ts';

describe('splitPolicies', () => {
  it('cuts at top-level semicolons only, skipping strings and comments, and keeps start offsets', () => {
    const text =
      '// intro; not a policy\n@id("a;b") permit(principal, action, resource)\n  when { context.sub == "x;\\"y" }; // trailing;\n\n@id("c")\nforbid(principal, action, resource);\n';
    const result = splitPolicies(text);
    assert.ok(result.ok);
    assert.deepEqual(
      result.statements.map((s) => [lineAt(text, s.start), s.text.slice(0, 9)]),
      [
        [2, '@id("a;b"'],
        [5, '@id("c")\n'],
      ],
    );
    assert.ok(result.statements[0]?.text.endsWith('"x;\\"y" };'));
  });

  it('reports an unclosed string with its offset', () => {
    const result = splitPolicies('@id("a") permit(principal, action, resource) when { context.sub == "x };');
    assert.equal(result.ok, false);
    assert.equal(!result.ok && result.offset, 67);
  });
});
