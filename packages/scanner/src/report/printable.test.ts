import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { printable } from './printable.ts';

describe('printable', () => {
  it('writes C0 and C1 controls, DEL, newlines and tabs as \\x escapes', () => {
    assert.equal(
      printable('a\u0000b\u001b[31mc\u007fd\u009be\nf\tg\r'),
      'a\\x00b\\x1b[31mc\\x7fd\\x9be\\x0af\\x09g\\x0d',
    );
  });

  it('writes bidi controls as \\u{} escapes, so text cannot reorder itself', () => {
    assert.equal(
      printable('invoice\u202egnp.exe\u202c \u2066x\u2069 \u200f'),
      'invoice\\u{202e}gnp.exe\\u{202c} \\u{2066}x\\u{2069} \\u{200f}',
    );
  });

  it('replaces lone surrogates and writes the non-characters XML forbids as escapes', () => {
    assert.equal(printable('a\ud800b\udc00c'), 'a\ufffdb\ufffdc');
    assert.equal(printable('\ufffe\uffff'), '\\u{fffe}\\u{ffff}');
  });

  it('leaves ordinary text alone, markup and non-ASCII included', () => {
    const text = 'GET /orders/:id → 403 <forbidden> & "quoted" \'x\' é ✓ 🔒 日本';
    assert.equal(printable(text), text);
  });
});
