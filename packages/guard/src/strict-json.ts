/**
 * JSON.parse keeps the last of two equal keys; another parser may keep the first. A token whose
 * header or claims say two things at once is refused rather than interpreted. Runs on the cold path
 * only (first sight of a token), after JSON.parse has accepted the text as valid JSON.
 */
export function hasDuplicateKeys(json: string): boolean {
  const keysOf: Array<Set<string> | null> = [];
  let expectKey = false;
  for (let i = 0; i < json.length; i++) {
    const c = json.charCodeAt(i);
    if (c === 0x22 /* " */) {
      let end = i + 1;
      while (end < json.length) {
        const d = json.charCodeAt(end);
        if (d === 0x5c /* \ */) end += 2;
        else if (d === 0x22) break;
        else end++;
      }
      const keys = keysOf[keysOf.length - 1];
      if (expectKey && keys) {
        const key = JSON.parse(json.slice(i, end + 1)) as string;
        if (keys.has(key)) return true;
        keys.add(key);
        expectKey = false;
      }
      i = end;
    } else if (c === 0x7b /* { */) {
      keysOf.push(new Set());
      expectKey = true;
    } else if (c === 0x5b /* [ */) {
      keysOf.push(null);
    } else if (c === 0x7d /* } */ || c === 0x5d /* ] */) {
      keysOf.pop();
      expectKey = false;
    } else if (c === 0x2c /* , */) {
      expectKey = Boolean(keysOf[keysOf.length - 1]);
    }
  }
  return false;
}

/** True when any string (key or value) anywhere in `value` holds a control character such as NUL. */
export function hasControlCharacters(value: unknown, depth = 0): boolean {
  if (depth > 16) return true;
  // eslint-disable-next-line no-control-regex -- finding control characters is the point
  if (typeof value === 'string') return /[\u0000-\u001f\u007f]/.test(value);
  if (Array.isArray(value)) return value.some((item) => hasControlCharacters(item, depth + 1));
  if (typeof value === 'object' && value !== null) {
    for (const [key, item] of Object.entries(value)) {
      if (hasControlCharacters(key, depth + 1) || hasControlCharacters(item, depth + 1)) return true;
    }
  }
  return false;
}

/** Why `parseStrictJson` refused a text. */
export type StrictJsonProblem =
  | 'encoding'
  | 'syntax'
  | 'duplicate-key'
  | 'prototype-key'
  | 'control-character'
  | 'lone-surrogate'
  | 'too-deep'
  | 'number-range';

export class StrictJsonError extends Error {
  readonly problem: StrictJsonProblem;
  constructor(problem: StrictJsonProblem, message: string) {
    super(message);
    this.name = 'StrictJsonError';
    this.problem = problem;
  }
}

/** Keys that reach an object's prototype chain in naive merges, at any depth. */
export const PROTOTYPE_KEYS: ReadonlySet<string> = new Set(['__proto__', 'constructor', 'prototype']);

/** Deeper than any body a route schema describes, shallow enough for recursive code downstream. */
export const MAX_JSON_DEPTH = 64;

// Not fatal-less: a body that is not UTF-8 is refused, not patched with U+FFFD. The BOM is kept, so
// JSON.parse refuses it too (RFC 8259 §8.1 lets a parser treat it as an error).
const utf8 = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });

// C0 controls other than tab, line feed and carriage return, and DEL: raw ones are already invalid
// JSON, escaped ones (\u0000, \b, \f, \u001b…) truncate C strings, rewrite terminals and split logs.
// eslint-disable-next-line no-control-regex -- finding control characters is the point
const CONTROL = /[\u0000-\u0008\u000b\u000c\u000e-\u001f\u007f]/;

/**
 * The one JSON parser for request bodies, on every adapter: JSON.parse, and then refused when the
 * text holds a key twice in one object (`{"amount":1,"amount":100000}`: other parsers keep the first),
 * a key named `__proto__`, `constructor` or `prototype`, a control character other than tab/LF/CR, a
 * lone surrogate, invalid UTF-8, nesting deeper than `maxDepth`, or a number JavaScript cannot hold
 * (`checkNumber`).
 */
export function parseStrictJson(input: Uint8Array | string, maxDepth = MAX_JSON_DEPTH): unknown {
  let text: string;
  if (typeof input === 'string') text = input;
  else {
    try {
      text = utf8.decode(input);
    } catch {
      throw new StrictJsonError('encoding', 'not valid UTF-8');
    }
  }
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (error) {
    throw new StrictJsonError('syntax', `not valid JSON (${error instanceof Error ? error.message : String(error)})`);
  }
  const problem = findProblem(text, maxDepth);
  if (problem !== null) throw problem;
  return value;
}

/** One pass over a text that JSON.parse accepted, so every string and bracket is well formed. */
function findProblem(text: string, maxDepth: number): StrictJsonError | null {
  const objects: Array<Set<string> | null> = [];
  let expectKey = false;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (c === 0x22 /* " */) {
      let end = i + 1;
      let plain = true;
      for (;;) {
        const d = text.charCodeAt(end);
        if (d === 0x22) break;
        if (d === 0x5c /* \ */) {
          plain = false;
          end += 2;
        } else {
          if (d === 0x7f || (d >= 0xd800 && d <= 0xdfff)) plain = false;
          end++;
        }
      }
      const keys = expectKey ? objects[objects.length - 1] : null;
      if (keys || !plain) {
        // Decoded only when it matters: a key, or a string with an escape, DEL or a surrogate.
        const decoded = plain ? text.slice(i + 1, end) : (JSON.parse(text.slice(i, end + 1)) as string);
        const problem = plain ? null : characterProblem(decoded);
        if (problem !== null) return problem;
        if (keys) {
          const name = JSON.stringify(decoded.slice(0, 64));
          if (PROTOTYPE_KEYS.has(decoded)) return new StrictJsonError('prototype-key', `key ${name} is not accepted`);
          if (keys.has(decoded)) return new StrictJsonError('duplicate-key', `key ${name} appears twice in one object`);
          keys.add(decoded);
          expectKey = false;
        }
      }
      i = end;
    } else if (c === 0x7b /* { */ || c === 0x5b /* [ */) {
      objects.push(c === 0x7b ? new Set() : null);
      if (objects.length > maxDepth) return new StrictJsonError('too-deep', `nesting deeper than ${maxDepth} levels`);
      expectKey = c === 0x7b;
    } else if (c === 0x7d /* } */ || c === 0x5d /* ] */) {
      objects.pop();
      expectKey = false;
    } else if (c === 0x2c /* , */) {
      expectKey = objects[objects.length - 1] instanceof Set;
    } else if (c === 0x2d /* - */ || (c >= 0x30 && c <= 0x39) /* 0-9 */) {
      let end = i + 1;
      while (end < text.length && isNumberCharacter(text.charCodeAt(end))) end++;
      const problem = checkNumber(text, i, end);
      if (problem !== null) return problem;
      i = end - 1;
    }
  }
  return null;
}

function isNumberCharacter(c: number): boolean {
  return (
    (c >= 0x30 && c <= 0x39) ||
    c === 0x2e /* . */ ||
    c === 0x65 /* e */ ||
    c === 0x45 /* E */ ||
    c === 0x2b /* + */ ||
    c === 0x2d
  ); /* - */
}

/** Beyond ±(2^53−1) an integer is no longer exact in a double (RFC 7493 §2.2, I-JSON). */
const SAFE_DIGITS = 15;
/**
 * Without an exponent, a non-zero value rounds to 0 only below about 2.5e-324, which takes at least
 * 324 digits behind the point (`0.` + 323 zeros + `2`): a token of at most this length cannot.
 */
const SHORT_NUMBER = 300;

/**
 * A number token (JSON.parse accepted it) that JavaScript cannot hold as written is refused rather
 * than handed on rounded (RFC 7493 §2.2): not finite (`1e400` becomes Infinity), beyond ±(2^53−1)
 * (`90071992547409931` becomes 90071992547409940; every double that large is an integer, so this
 * also covers `9.1e16` and `1e300`), or a non-zero value that underflows to 0 (`1e-400`). Tokens of
 * at most 15 integer digits without an exponent and at most 300 characters — nearly all — are
 * never converted.
 */
function checkNumber(text: string, start: number, end: number): StrictJsonError | null {
  const first = text.charCodeAt(start) === 0x2d ? start + 1 : start;
  let integerDigits = 0;
  let fraction = false;
  let exponent = false;
  for (let i = first; i < end && !exponent; i++) {
    const c = text.charCodeAt(i);
    if (c === 0x65 || c === 0x45) exponent = true;
    else if (c === 0x2e) fraction = true;
    else if (!fraction) integerDigits++;
  }
  if (!exponent && integerDigits <= SAFE_DIGITS && end - start <= SHORT_NUMBER) return null;
  const token = text.slice(start, end);
  const value = Number(token);
  const underflow = value === 0 && /[1-9]/.test(token.split(/[eE]/, 1)[0] ?? '');
  if (Number.isFinite(value) && Math.abs(value) <= Number.MAX_SAFE_INTEGER && !underflow) return null;
  const shown = token.length > 40 ? `${token.slice(0, 40)}…` : token;
  return new StrictJsonError(
    'number-range',
    `number ${shown} cannot be held exactly: numbers must be finite, ` +
      'non-zero values must not round to 0 and their magnitude must be at most 2^53−1 (RFC 7493 §2.2); ' +
      'send larger or exact values as strings',
  );
}

function characterProblem(value: string): StrictJsonError | null {
  if (CONTROL.test(value)) return new StrictJsonError('control-character', 'a string holds a control character');
  if (!value.isWellFormed()) return new StrictJsonError('lone-surrogate', 'a string holds a lone surrogate');
  return null;
}
