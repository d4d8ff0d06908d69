/**
 * The steps of a guide, read from its Markdown so that the guide cannot drift from what the consumer
 * test runs. An HTML comment (invisible once rendered) right before a fenced block says what to do
 * with it:
 *
 *   <!-- file: greeter.js -->                          write the block to that file
 *   <!-- run -->                                       run each line of the block as a command
 *   <!-- run: in the background until "listening" -->  start it, go on once its output says so
 *   <!-- run: until it succeeds -->                    run it again until it exits 0
 *
 * A block in a language that could be run or written (sh, js, cedar, json…) without such a comment is
 * an error: either the test runs it, or the guide shows it as output (```text).
 */

export type CommandMode =
  | { readonly kind: 'once' }
  | { readonly kind: 'background'; readonly ready: string }
  | { readonly kind: 'until-success' };

export type GuideStep =
  | { readonly kind: 'file'; readonly path: string; readonly content: string; readonly line: number }
  | { readonly kind: 'command'; readonly command: string; readonly mode: CommandMode; readonly line: number };

/** Languages of blocks a reader would run or save: each needs a marker. */
const ACTIONABLE = new Set([
  'sh',
  'bash',
  'shell',
  'console',
  'js',
  'javascript',
  'mjs',
  'ts',
  'typescript',
  'cedar',
  'json',
  'yaml',
]);
const SHELL = new Set(['sh', 'bash', 'shell']);

type Marker = { readonly kind: 'file'; readonly path: string } | { readonly kind: 'run'; readonly mode: CommandMode };

export function readGuideSteps(markdown: string, name: string): GuideStep[] {
  const lines = markdown.split('\n');
  const steps: GuideStep[] = [];
  let marker: { readonly marker: Marker; readonly line: number } | null = null;
  for (let index = 0; index < lines.length; index++) {
    const text = lines[index] ?? '';
    const found = readMarker(text, `${name}:${index + 1}`);
    if (found !== null) {
      marker = { marker: found, line: index + 1 };
      continue;
    }
    const fence = /^```(\S*)/.exec(text);
    if (fence === null) {
      if (marker !== null && text.trim() !== '')
        throw new Error(`${name}:${marker.line}: a marker must come right before its code block`);
      continue;
    }
    const language = fence[1] ?? '';
    const end = lines.findIndex((candidate, at) => at > index && candidate.startsWith('```'));
    if (end === -1) throw new Error(`${name}:${index + 1}: the code block is not closed`);
    const body = lines.slice(index + 1, end);
    if (marker === null) {
      if (ACTIONABLE.has(language)) {
        throw new Error(
          `${name}:${index + 1}: a \`\`\`${language} block without <!-- run --> or <!-- file: … -->: ` +
            'mark it, so that the consumer test runs it, or show it as ```text',
        );
      }
    } else {
      steps.push(...stepsOf(marker.marker, language, body, index + 2, name));
    }
    marker = null;
    index = end;
  }
  if (marker !== null) throw new Error(`${name}:${marker.line}: a marker with no code block after it`);
  return steps;
}

function readMarker(text: string, where: string): Marker | null {
  const comment = /^<!--\s*(file|run)\b(.*?)\s*-->\s*$/.exec(text);
  if (comment === null) return null;
  const rest = (comment[2] ?? '').trim();
  if (comment[1] === 'file') {
    const path = /^:\s*(\S+)$/.exec(rest)?.[1];
    if (path === undefined || path.startsWith('/') || path.split('/').includes('..')) {
      throw new Error(`${where}: write <!-- file: <relative path> -->; got ${JSON.stringify(text)}`);
    }
    return { kind: 'file', path };
  }
  if (rest === '') return { kind: 'run', mode: { kind: 'once' } };
  if (rest === ': until it succeeds') return { kind: 'run', mode: { kind: 'until-success' } };
  const ready = /^: in the background until "([^"]+)"$/.exec(rest)?.[1];
  if (ready !== undefined) return { kind: 'run', mode: { kind: 'background', ready } };
  throw new Error(
    `${where}: unknown marker ${JSON.stringify(text)}: <!-- run -->, <!-- run: until it succeeds -->, ` +
      '<!-- run: in the background until "<output>" --> or <!-- file: <path> -->',
  );
}

function stepsOf(
  marker: Marker,
  language: string,
  body: readonly string[],
  firstLine: number,
  name: string,
): GuideStep[] {
  if (marker.kind === 'file')
    return [{ kind: 'file', path: marker.path, content: `${body.join('\n')}\n`, line: firstLine }];
  if (!SHELL.has(language))
    throw new Error(`${name}:${firstLine - 1}: only shell blocks are run; this one is \`\`\`${language}`);
  // One command per line; comment lines are prose.
  const commands = body
    .map((command, at) => ({ command: command.trim(), line: firstLine + at }))
    .filter(({ command }) => command !== '' && !command.startsWith('#'));
  if (commands.length === 0) throw new Error(`${name}:${firstLine - 1}: a run block with no command`);
  if (marker.mode.kind !== 'once' && commands.length > 1) {
    throw new Error(`${name}:${firstLine - 1}: a block run in the background or until it succeeds holds one command`);
  }
  return commands.map(({ command, line }) => ({ kind: 'command', command, mode: marker.mode, line }));
}
