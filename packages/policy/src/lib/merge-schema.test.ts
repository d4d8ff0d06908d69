import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { checkParseSchema } from '@cedar-policy/cedar-wasm/nodejs';
import { mergeSchemaFiles } from './merge-schema.ts';

describe('mergeSchemaFiles', () => {
  it('merges blocks of the same namespace, keeps other namespaces and top-level declarations', () => {
    const result = mergeSchemaFiles([
      { file: 'a', text: 'namespace Lockstep {\n  entity Workload;\n}\n' },
      {
        file: 'b',
        text: '// b\nentity Global;\n@doc("shop")\nnamespace Shop { entity Cart; }\nnamespace Lockstep { entity Service; }\n',
      },
    ]);
    assert.ok(result.ok);
    assert.equal(
      result.schema.text,
      'entity Global;\nnamespace Lockstep {\n  entity Workload;\n\n entity Service; \n}\n@doc("shop")\nnamespace Shop { entity Cart; \n}\n',
    );
    assert.deepEqual(checkParseSchema(result.schema.text), { type: 'success' });
  });

  it('maps a byte offset of the merged text back to file and line', () => {
    const result = mergeSchemaFiles([
      { file: 'a', text: 'namespace N {\n  entity A;\n}\n' },
      { file: 'b', text: '// é\n\nnamespace N {\n  entity B;\n}\n' },
    ]);
    assert.ok(result.ok);
    const text = result.schema.text;
    const byteOf = (needle: string) => Buffer.byteLength(text.slice(0, text.indexOf(needle)));
    assert.deepEqual(result.schema.locate(byteOf('entity A')), { file: 'a', line: 2 });
    assert.deepEqual(result.schema.locate(byteOf('entity B')), { file: 'b', line: 4 });
  });

  it('refuses an unclosed namespace block or string, naming the line', () => {
    assert.deepEqual(mergeSchemaFiles([{ file: 'x', text: '\nnamespace N {\n entity A;\n' }]), {
      ok: false,
      location: { file: 'x', line: 2 },
      message: 'namespace block is not closed: add the missing `}`',
    });
    const unclosed = mergeSchemaFiles([{ file: 'x', text: 'namespace N {\n @doc("oops\n}' }]);
    assert.equal(!unclosed.ok && unclosed.location.line, 2);
  });
});
