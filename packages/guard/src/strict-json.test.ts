import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import {
  hasControlCharacters,
  hasDuplicateKeys,
  MAX_JSON_DEPTH,
  parseStrictJson,
  StrictJsonError,
  type StrictJsonProblem,
} from './strict-json.ts';

describe('hasDuplicateKeys', () => {
  it('is false for objects whose keys are all distinct', () => {
    assert.equal(hasDuplicateKeys('{"sub":"alice","txn":"t1","aud":"shop.test"}'), false);
    assert.equal(hasDuplicateKeys('{}'), false);
    assert.equal(hasDuplicateKeys('[]'), false);
  });

  it('finds a duplicate at the top level, with or without whitespace', () => {
    assert.equal(hasDuplicateKeys('{"sub":"alice","sub":"admin"}'), true);
    assert.equal(hasDuplicateKeys('{ "sub" : "alice" ,\n  "sub" : "admin" }'), true);
  });

  it('finds a duplicate inside a nested object, also after a nested value', () => {
    assert.equal(hasDuplicateKeys('{"tctx":{"roles":["customer"],"roles":["admin"]}}'), true);
    assert.equal(hasDuplicateKeys('{"a":{"b":1},"a":2}'), true);
    assert.equal(hasDuplicateKeys('{"a":[1,2],"a":3}'), true);
    assert.equal(hasDuplicateKeys('{"a":[],"b":{},"a":0}'), true);
  });

  it('finds a duplicate inside an object that sits in an array', () => {
    assert.equal(hasDuplicateKeys('{"list":[{"x":1,"x":2}]}'), true);
    assert.equal(hasDuplicateKeys('[1,{"k":1},{"y":1,"y":2}]'), true);
  });

  it('finds keys that are equal only once their escapes are decoded', () => {
    assert.equal(hasDuplicateKeys('{"sub":"alice","s\\u0075b":"admin"}'), true);
    assert.equal(hasDuplicateKeys('{"\\u0073\\u0075\\u0062":"a","sub":"b"}'), true);
    assert.equal(hasDuplicateKeys('{"a/b":1,"a\\/b":2}'), true);
  });

  it('does not confuse equal keys in different objects with duplicates', () => {
    assert.equal(hasDuplicateKeys('{"a":{"b":1},"b":2}'), false);
    assert.equal(hasDuplicateKeys('{"a":{"x":1},"b":{"x":1}}'), false);
    assert.equal(hasDuplicateKeys('[{"a":1},{"a":1}]'), false);
    assert.equal(hasDuplicateKeys('{"a":[{"id":1},{"id":2}],"id":3}'), false);
  });

  it('does not take string values, array strings or key look-alikes inside strings as keys', () => {
    assert.equal(hasDuplicateKeys('{"a":"a","b":"a"}'), false);
    assert.equal(hasDuplicateKeys('{"a":["a","a"],"b":1}'), false);
    assert.equal(hasDuplicateKeys('{"a":"{\\"a\\":1,\\"a\\":2}","b":1}'), false);
    assert.equal(hasDuplicateKeys('{"a":"}, \\"a\\": [","b":"]{"}'), false);
  });

  it('handles braces, quotes and backslashes inside keys and values', () => {
    assert.equal(hasDuplicateKeys('{"x\\\\":1,"x":2}'), false);
    assert.equal(hasDuplicateKeys('{"x\\\\":1,"x\\\\":2}'), true);
    assert.equal(hasDuplicateKeys('{"q\\"":"\\\\","q":"\\""}'), false);
    assert.equal(hasDuplicateKeys('{"{":"}","[":"]","{":0}'), true);
    assert.equal(hasDuplicateKeys('{"v":"\\\\\\"","w":"\\\\","v2":"a,\\"v\\":1"}'), false);
  });
});

describe('hasControlCharacters', () => {
  it('is false for clean claims', () => {
    assert.equal(
      hasControlCharacters({
        sub: 'alice',
        tctx: { roles: ['customer'], tenant: 'acme' },
        exp: 1,
        ok: true,
        none: null,
      }),
      false,
    );
  });

  it('finds NUL and other C0 characters and DEL in a top-level value', () => {
    for (const c of ['\u0000', '\u0001', '\n', '\r', '\t', '\u001f', '\u007f']) {
      assert.equal(hasControlCharacters({ sub: `alice${c}` }), true, JSON.stringify(c));
    }
  });

  it('finds a NUL in a key', () => {
    assert.equal(hasControlCharacters({ 'sub\u0000': 'alice' }), true);
    assert.equal(hasControlCharacters({ tctx: { 'role\u0000s': [] } }), true);
  });

  it('finds a NUL in a nested value and inside an array', () => {
    assert.equal(hasControlCharacters({ tctx: { tenant: 'ac\u0000me' } }), true);
    assert.equal(hasControlCharacters({ tctx: { roles: ['customer', 'ad\u0000min'] } }), true);
    assert.equal(hasControlCharacters(['ok', ['x\u0000']]), true);
  });

  it('treats nesting deeper than 16 levels as suspicious', () => {
    const nest = (levels: number): unknown => {
      let value: unknown = 'leaf';
      for (let i = 0; i < levels; i++) value = [value];
      return value;
    };
    assert.equal(hasControlCharacters(nest(16)), false);
    assert.equal(hasControlCharacters(nest(17)), true);
  });
});

describe('parseStrictJson', () => {
  const refuses = (input: string | Uint8Array, problem: StrictJsonProblem) =>
    assert.throws(
      () => parseStrictJson(input),
      (error: unknown) => error instanceof StrictJsonError && error.problem === problem,
      `${String(input).slice(0, 60)} → ${problem}`,
    );

  it('returns what JSON.parse returns for ordinary JSON, from text or UTF-8 bytes', () => {
    const text =
      '{"item":"tea","quantity":2,"meta":{"tags":["a","b"],"note":"line\\none\\ttab\\r",' +
      '"emoji":"\\ud83c\\udf75 🍵"},"n":null,"ok":true}';
    assert.deepEqual(parseStrictJson(text), JSON.parse(text));
    assert.deepEqual(parseStrictJson(Buffer.from(text)), JSON.parse(text));
    for (const value of ['[]', '{}', '"x"', '1', 'null', '[{"a":1},{"a":1}]', '{"a":{"b":1},"b":2}']) {
      assert.deepEqual(parseStrictJson(value), JSON.parse(value));
    }
  });

  it('refuses text that is not JSON, and bytes that are not UTF-8', () => {
    refuses('{"a":', 'syntax');
    refuses('{"a":1}x', 'syntax');
    refuses('\ufeff{"a":1}', 'syntax');
    refuses(Buffer.from([0x7b, 0x22, 0x61, 0x22, 0x3a, 0x22, 0xff, 0x22, 0x7d]), 'encoding');
  });

  it('refuses a key twice in one object, also after escapes and at any depth', () => {
    refuses('{"amount":1,"amount":100000}', 'duplicate-key');
    refuses('{"amount":1,"\\u0061mount":2}', 'duplicate-key');
    refuses('{"a":{"b":[{"c":1,"c":2}]}}', 'duplicate-key');
    assert.deepEqual(parseStrictJson('{"a":{"x":1},"b":{"x":1}}'), { a: { x: 1 }, b: { x: 1 } });
  });

  it('refuses __proto__, constructor and prototype as keys at any depth, not as values', () => {
    for (const key of ['__proto__', 'constructor', 'prototype', '\\u005f_proto__']) {
      refuses(`{"${key}":{}}`, 'prototype-key');
      refuses(`{"a":[{"b":{"${key}":1}}]}`, 'prototype-key');
    }
    assert.deepEqual(parseStrictJson('{"a":"__proto__","b":["constructor"]}'), { a: '__proto__', b: ['constructor'] });
  });

  it('refuses control characters other than tab, LF and CR, in keys and values, escaped or raw DEL', () => {
    for (const escape of ['\\u0000', '\\u0001', '\\b', '\\f', '\\u000b', '\\u001b', '\\u007f', '\u007f']) {
      refuses(`{"a":"x${escape}y"}`, 'control-character');
      refuses(`{"k${escape}":1}`, 'control-character');
      refuses(`["x${escape}"]`, 'control-character');
    }
    assert.deepEqual(parseStrictJson('{"a":"\\t\\n\\r"}'), { a: '\t\n\r' });
    // An escaped backslash followed by "u0000" is text, not a NUL.
    assert.deepEqual(parseStrictJson('{"a":"\\\\u0000"}'), { a: '\\u0000' });
  });

  it('refuses lone surrogates, escaped or raw', () => {
    refuses('{"a":"\\ud800"}', 'lone-surrogate');
    refuses('{"a":"\\udc00x"}', 'lone-surrogate');
    refuses('{"a":"\ud800"}', 'lone-surrogate');
  });

  it(`refuses nesting deeper than ${MAX_JSON_DEPTH} levels`, () => {
    assert.doesNotThrow(() => parseStrictJson(`${'['.repeat(MAX_JSON_DEPTH)}${']'.repeat(MAX_JSON_DEPTH)}`));
    refuses(`${'['.repeat(MAX_JSON_DEPTH + 1)}${']'.repeat(MAX_JSON_DEPTH + 1)}`, 'too-deep');
    refuses(`${'{"a":'.repeat(MAX_JSON_DEPTH + 1)}1${'}'.repeat(MAX_JSON_DEPTH + 1)}`, 'too-deep');
  });
});

describe('parseStrictJson: numbers JavaScript cannot hold (RFC 7493 §2.2)', () => {
  const refusesNumber = (text: string) =>
    assert.throws(
      () => parseStrictJson(text),
      (error: unknown) =>
        error instanceof StrictJsonError && error.problem === 'number-range' && /RFC 7493/.test(error.message),
      text,
    );

  it('refuses numbers that are not finite once parsed', () => {
    for (const text of ['{"amount":1e400}', '{"amount":-1e400}', '[1.5e309]', '{"a":{"b":[1E+400]}}']) {
      refusesNumber(text);
    }
  });

  it('refuses magnitudes beyond 2^53−1, however they are written', () => {
    for (const text of [
      '{"id":90071992547409931}',
      '[9007199254740992]',
      '[-9007199254740992]',
      '[9.1e16]',
      '[90071992547409931.0]',
      '[1e300]',
      '{"a":12345678901234567890123}',
    ])
      refusesNumber(text);
  });

  it('refuses a non-zero number that rounds to 0', () => {
    refusesNumber('[1e-400]');
    refusesNumber('{"a":-0.5e-330}');
  });

  it('accepts every number a double holds as written, up to ±(2^53−1)', () => {
    const text =
      '[0,-0,1,-1,0.1,1.5,-2.25e3,1e15,123456789012345,9007199254740991,-9007199254740991,' +
      '0e400,0.0,1e-300,3.141592653589793,2.5E+10]';
    assert.deepEqual(parseStrictJson(text), JSON.parse(text));
    const inStrings = '{"n":12,"s":"90071992547409931e999","m":[-7]}';
    assert.deepEqual(parseStrictJson(inStrings), { n: 12, s: '90071992547409931e999', m: [-7] });
  });
});

// Found missing by the mutation run (docs/mutation.md).
describe('parseStrictJson: the edges of the one pass', () => {
  const refuses = (input: string, problem: StrictJsonProblem) =>
    assert.throws(
      () => parseStrictJson(input),
      (error: unknown) => error instanceof StrictJsonError && error.problem === problem,
      `${input.slice(0, 60)} → ${problem}`,
    );

  it('still finds a duplicate key after an array closes in the same object', () => {
    refuses('{"items":[1,2],"amount":1,"amount":100000}', 'duplicate-key');
    refuses('{"a":[[],{}],"b":[],"b":1}', 'duplicate-key');
  });

  it('takes equal strings in an array as values, never as keys', () => {
    assert.deepEqual(parseStrictJson('["a","a","a"]'), ['a', 'a', 'a']);
    assert.deepEqual(parseStrictJson('{"tags":["x","x","x"]}'), { tags: ['x', 'x', 'x'] });
  });

  it('reads a number token whole: a long fraction is exact enough, a fraction with an exponent is checked', () => {
    const text = '[0.12345678901234567,-0.98765432109876543,0.5]';
    assert.deepEqual(parseStrictJson(text), JSON.parse(text));
    refuses('{"id":1234567890123.4567e4}', 'number-range');
  });

  it('refuses a string that is only a raw DEL, or only a raw lone low surrogate (text input)', () => {
    refuses('{"a":"\u007f"}', 'control-character');
    refuses('{"a":"\udfff"}', 'lone-surrogate');
  });

  it('names a refused number as it was sent: with its minus sign, without the whitespace before it', () => {
    const cases: Array<[string, string]> = [
      ['[-1e400]', '-1e400'],
      ['{"id": -9007199254740992}', '-9007199254740992'],
      ['[\n\t1e400 ]', '1e400'],
    ];
    for (const [text, token] of cases) {
      assert.throws(
        () => parseStrictJson(text),
        (error: unknown) =>
          error instanceof StrictJsonError &&
          error.problem === 'number-range' &&
          error.message.startsWith(`number ${token} cannot be held exactly`),
        text,
      );
    }
  });

  // Found by the mutation run: the fast path took every number without an exponent and with at most
  // 15 integer digits, so a long fraction that rounds to 0 came through as 0.
  it('refuses a fraction written out so long that it rounds to 0, and keeps the smallest one that does not', () => {
    refuses(`[0.${'0'.repeat(400)}1]`, 'number-range');
    refuses(`{"amount":-0.${'0'.repeat(323)}2}`, 'number-range');
    const smallest = `0.${'0'.repeat(323)}5`; // 5e-324, the smallest double above 0
    assert.deepEqual(parseStrictJson(`[${smallest}]`), [5e-324]);
    const long = `1.${'0'.repeat(400)}`;
    assert.deepEqual(parseStrictJson(`{"amount":${long}}`), { amount: 1 });
  });
});
