/**
 * Evidence, targets and even service names come back from the services under attack, so a report
 * must not let them steer the reader's terminal (escape sequences), forge lines (newlines), reorder
 * text (bidi controls) or break the XML it is written into (characters XML 1.0 forbids). Every
 * reporter but JSON shows such text through `printable`, which writes those characters as visible
 * escapes (`\x1b`, `\u{202e}`) and lone surrogates as U+FFFD.
 */

export function printable(text: string): string {
  let out = '';
  for (const char of text.toWellFormed()) {
    const code = char.codePointAt(0) ?? 0;
    out += isUnsafe(code) ? escapeCodePoint(code) : char;
  }
  return out;
}

function isUnsafe(code: number): boolean {
  return (
    code <= 0x1f || // C0 controls, newline and tab included: evidence is one line
    (code >= 0x7f && code <= 0x9f) || // DEL and C1 controls (CSI is 0x9b)
    code === 0x200e ||
    code === 0x200f || // left-to-right / right-to-left marks
    (code >= 0x202a && code <= 0x202e) || // bidi embeddings and overrides
    (code >= 0x2066 && code <= 0x2069) || // bidi isolates
    code === 0xfffe ||
    code === 0xffff // not characters; XML 1.0 forbids them
  );
}

function escapeCodePoint(code: number): string {
  const hex = code.toString(16);
  return code <= 0xff ? `\\x${hex.padStart(2, '0')}` : `\\u{${hex}}`;
}
