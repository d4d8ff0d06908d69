import { indexOfByteOffset, lineAt, scanCedar } from './scan-cedar.ts';
import type { CedarToken } from './scan-cedar.ts';

export type SchemaFile = { readonly file: string; readonly text: string };

/** Where a byte offset of the merged schema text came from. */
export type SchemaLocation = { readonly file: string; readonly line: number };

export type MergedSchema = {
  readonly text: string;
  /** Maps a Cedar byte offset into `text` back to the file and line it was copied from. */
  readonly locate: (byteOffset: number) => SchemaLocation;
};

export type MergeResult =
  | { readonly ok: true; readonly schema: MergedSchema }
  | { readonly ok: false; readonly location: SchemaLocation; readonly message: string };

type Span = { readonly file: SchemaFile; readonly start: number; readonly end: number };
type NamespaceBlock = { readonly annotations: Span | null; readonly header: Span; readonly body: Span };
type Segment = { readonly outStart: number; readonly span: Span };

/**
 * Cedar refuses a schema text that opens the same namespace twice, yet every schema file (ours and
 * the user's) writes `namespace Lockstep { ... }`. So the files are merged textually: all
 * top-level declarations first, then one block per namespace holding each file's block body in file
 * order. Every piece is copied verbatim and remembered, so Cedar's error offsets in the merged text
 * map back to the file and line the user wrote.
 */
export function mergeSchemaFiles(files: readonly SchemaFile[]): MergeResult {
  const declarations: Span[] = [];
  const namespaces = new Map<string, NamespaceBlock[]>();
  for (const file of files) {
    const scanned = scanCedar(file.text);
    if (!scanned.ok) return failure(file, scanned.offset, scanned.message);
    const failed = collectItems(file, scanned.tokens, declarations, namespaces);
    if (failed) return failed;
  }

  let text = '';
  const segments: Segment[] = [];
  const copy = (span: Span): void => {
    segments.push({ outStart: text.length, span });
    text += span.file.text.slice(span.start, span.end);
  };
  for (const span of declarations) {
    copy(span);
    text += '\n';
  }
  for (const blocks of namespaces.values()) {
    for (const block of blocks) {
      if (block.annotations) {
        copy(block.annotations);
        text += '\n';
      }
    }
    copy((blocks[0] as NamespaceBlock).header);
    for (const block of blocks) {
      copy(block.body);
      text += '\n';
    }
    text += '}\n';
  }
  const merged = text;
  return { ok: true, schema: { text: merged, locate: (byteOffset) => locateIn(merged, segments, byteOffset) } };
}

function collectItems(
  file: SchemaFile,
  tokens: readonly CedarToken[],
  declarations: Span[],
  namespaces: Map<string, NamespaceBlock[]>,
): MergeResult | undefined {
  let i = 0;
  while (i < tokens.length) {
    const start = i;
    i = skipAnnotations(tokens, i);
    const keyword = tokens[i];
    if (keyword?.kind === 'word' && keyword.text === 'namespace') {
      let open = i + 1;
      while (open < tokens.length && tokens[open]?.text !== '{') open += 1;
      const close = matchingBrace(tokens, open);
      if (open >= tokens.length || close === -1) {
        return failure(file, keyword.start, 'namespace block is not closed: add the missing `}`');
      }
      const name = tokens
        .slice(i + 1, open)
        .map((t) => t.text)
        .join('');
      const openToken = tokens[open] as CedarToken;
      const blocks = namespaces.get(name) ?? [];
      blocks.push({
        annotations:
          start < i
            ? { file, start: (tokens[start] as CedarToken).start, end: (tokens[i - 1] as CedarToken).end }
            : null,
        header: { file, start: keyword.start, end: openToken.end },
        body: { file, start: openToken.end, end: (tokens[close] as CedarToken).start },
      });
      namespaces.set(name, blocks);
      i = close + 1;
    } else {
      while (i < tokens.length && tokens[i]?.text !== ';') i += 1;
      const last = tokens[Math.min(i, tokens.length - 1)] as CedarToken;
      declarations.push({ file, start: (tokens[start] as CedarToken).start, end: last.end });
      i += 1;
    }
  }
  return undefined;
}

/** `@name` or `@name("value")`, repeated. */
function skipAnnotations(tokens: readonly CedarToken[], from: number): number {
  let i = from;
  while (tokens[i]?.text === '@') {
    i += 2;
    if (tokens[i]?.text === '(') {
      while (i < tokens.length && tokens[i]?.text !== ')') i += 1;
      i += 1;
    }
  }
  return i;
}

function matchingBrace(tokens: readonly CedarToken[], open: number): number {
  let depth = 0;
  for (let i = open; i < tokens.length; i += 1) {
    const text = (tokens[i] as CedarToken).text;
    if (text === '{') depth += 1;
    else if (text === '}') {
      depth -= 1;
      if (depth === 0) return i;
    }
  }
  return -1;
}

function locateIn(merged: string, segments: readonly Segment[], byteOffset: number): SchemaLocation {
  const offset = indexOfByteOffset(merged, byteOffset);
  // Offsets in the glue we added ("\n", "}") belong to the last piece copied before them.
  let found: Segment | undefined;
  for (const segment of segments) {
    if (segment.outStart <= offset) found = segment;
    else break;
  }
  if (!found) return { file: segments[0]?.span.file.file ?? '(schema)', line: 1 };
  const { span } = found;
  const inFile = Math.min(span.start + (offset - found.outStart), span.end);
  return { file: span.file.file, line: lineAt(span.file.text, inFile) };
}

function failure(file: SchemaFile, offset: number, message: string): MergeResult {
  return { ok: false, location: { file: file.file, line: lineAt(file.text, offset) }, message };
}
