/**
 * A minimal lexer for Cedar policy and schema text: just enough to find statement boundaries
 * (`;`, braces) without being fooled by strings or `//` comments. Cedar itself remains the parser;
 * this only tells us where each policy or namespace block starts so errors can name file:line.
 */
export type CedarToken = {
  readonly kind: 'word' | 'string' | 'punct';
  readonly start: number;
  readonly end: number;
  readonly text: string;
};

export type ScanResult =
  | { readonly ok: true; readonly tokens: readonly CedarToken[] }
  | { readonly ok: false; readonly offset: number; readonly message: string };

const wordChar = /[A-Za-z0-9_]/;

export function scanCedar(text: string): ScanResult {
  const tokens: CedarToken[] = [];
  let i = 0;
  while (i < text.length) {
    const ch = text[i] as string;
    if (ch === ' ' || ch === '\t' || ch === '\n' || ch === '\r' || ch === '\f' || ch === '\v') {
      i += 1;
    } else if (ch === '/' && text[i + 1] === '/') {
      const newline = text.indexOf('\n', i);
      i = newline === -1 ? text.length : newline + 1;
    } else if (ch === '"') {
      const end = closingQuote(text, i + 1);
      if (end === -1) return { ok: false, offset: i, message: 'string literal is not closed: add the missing `"`' };
      tokens.push({ kind: 'string', start: i, end: end + 1, text: text.slice(i, end + 1) });
      i = end + 1;
    } else if (wordChar.test(ch)) {
      let end = i + 1;
      while (end < text.length && wordChar.test(text[end] as string)) end += 1;
      tokens.push({ kind: 'word', start: i, end, text: text.slice(i, end) });
      i = end;
    } else {
      tokens.push({ kind: 'punct', start: i, end: i + 1, text: ch });
      i += 1;
    }
  }
  return { ok: true, tokens };
}

function closingQuote(text: string, from: number): number {
  for (let i = from; i < text.length; i += 1) {
    const ch = text[i];
    if (ch === '\\') i += 1;
    else if (ch === '"') return i;
  }
  return -1;
}

/** Cedar reports source locations as UTF-8 byte offsets; JavaScript strings index UTF-16 units. */
export function indexOfByteOffset(text: string, byteOffset: number): number {
  return Buffer.from(text, 'utf8').subarray(0, byteOffset).toString('utf8').length;
}

/** 1-based line of a UTF-16 index into `text`. */
export function lineAt(text: string, offset: number): number {
  let line = 1;
  const end = Math.min(offset, text.length);
  for (let i = 0; i < end; i += 1) if (text.charCodeAt(i) === 10) line += 1;
  return line;
}
