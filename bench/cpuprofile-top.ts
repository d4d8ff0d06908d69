/**
 * Where a V8 CPU profile's time went: the top functions by self time and by inclusive time (a function
 * counted once per sample however often it recurs on the stack), and self time per file or package.
 * Reads the `.cpuprofile` JSON that `node --cpu-prof` writes (for the mesh bench's servers:
 * `BENCH_MESH_PROFILE=<dir> BENCH_MESH_TARGETS=bare,sidecar node bench/mesh.ts`).
 *
 *   node bench/cpuprofile-top.ts <file.cpuprofile> [--top 30] [--since <seconds>] [--callers <name>]
 *     [--until <seconds>] [--timeline]
 *
 * `--since` skips the first seconds of the profile (start-up, joining the control plane), so that the
 * figures are those of the load. `--callers` also lists the stacks (five frames up) under which functions
 * whose name contains <name> ran; `--until` ends the window; `--timeline` prints how busy each second was (to
 * choose the window: a server of the mesh bench idles while the other targets take their turn). Percentages: of the samples kept, and of the busy ones (not `(idle)`).
 */
import { readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';

interface ProfileNode {
  readonly id: number;
  readonly callFrame: { readonly functionName: string; readonly url: string; readonly lineNumber: number };
  readonly children?: readonly number[];
}

interface CpuProfile {
  readonly nodes: readonly ProfileNode[];
  readonly startTime: number;
  readonly samples: readonly number[];
  readonly timeDeltas: readonly number[];
}

const { values, positionals } = parseArgs({
  allowPositionals: true,
  options: {
    top: { type: 'string', default: '30' },
    since: { type: 'string', default: '0' },
    until: { type: 'string', default: 'Infinity' },
    timeline: { type: 'boolean', default: false },
    callers: { type: 'string' },
  },
});
const file = positionals[0];
if (file === undefined) {
  console.error('usage: node bench/cpuprofile-top.ts <file.cpuprofile> [--top 30] [--since <seconds>]');
  process.exit(2);
}
const top = Number(values.top);
const sinceUs = Number(values.since) * 1e6;
const untilUs = Number(values.until) * 1e6;

const profile = JSON.parse(readFileSync(file, 'utf8')) as CpuProfile;
const byId = new Map(profile.nodes.map((node) => [node.id, node]));
const parent = new Map<number, number>();
for (const node of profile.nodes) for (const child of node.children ?? []) parent.set(child, node.id);

/** A short, stable place: the package (node_modules/<pkg>, packages/<pkg>) and the file, or node's own module. */
function placeOf(url: string): string {
  if (url === '') return '(native/V8)';
  const path = url.replace(/^file:\/\//u, '');
  const modules = path.lastIndexOf('node_modules/');
  if (modules !== -1) {
    const rest = path.slice(modules + 'node_modules/'.length).split('/');
    const name = rest[0]?.startsWith('@') ? `${rest[0]}/${rest[1]}` : (rest[0] ?? '');
    return `${name}:${rest.slice(name.includes('/') ? 2 : 1).join('/')}`;
  }
  const workspace = path.match(/\/(packages\/[^/]+\/.*|bench\/.*)$/u);
  return workspace?.[1] ?? path;
}

const keyOf = (node: ProfileNode) =>
  `${node.callFrame.functionName || '(anonymous)'} ${placeOf(node.callFrame.url)}:${node.callFrame.lineNumber + 1}`;

const self = new Map<string, number>();
const inclusive = new Map<string, number>();
const perPlace = new Map<string, number>();
const callerStacks = new Map<string, number>();
let kept = 0;
let elapsed = 0;
/** Per second of the profile: [samples, busy samples]. */
const seconds: [number, number][] = [];
profile.samples.forEach((sampleId, index) => {
  elapsed += profile.timeDeltas[index] ?? 0;
  let node = byId.get(sampleId);
  if (node === undefined) return;
  const second = (seconds[Math.floor(elapsed / 1e6)] ??= [0, 0]);
  second[0]++;
  if (node.callFrame.functionName !== '(idle)') second[1]++;
  if (elapsed < sinceUs || elapsed >= untilUs) return;
  kept++;
  const own = keyOf(node);
  self.set(own, (self.get(own) ?? 0) + 1);
  const place = placeOf(node.callFrame.url);
  perPlace.set(place, (perPlace.get(place) ?? 0) + 1);
  if (values.callers !== undefined && node.callFrame.functionName.includes(values.callers)) {
    const frames: string[] = [];
    for (let up: ProfileNode | undefined = node; up !== undefined && frames.length < 6;) {
      frames.push(keyOf(up));
      const id = parent.get(up.id);
      up = id === undefined ? undefined : byId.get(id);
    }
    const stack = frames.join(' < ');
    callerStacks.set(stack, (callerStacks.get(stack) ?? 0) + 1);
  }
  const seen = new Set<string>();
  while (node !== undefined) {
    const key = keyOf(node);
    if (!seen.has(key)) {
      seen.add(key);
      inclusive.set(key, (inclusive.get(key) ?? 0) + 1);
    }
    const up = parent.get(node.id);
    node = up === undefined ? undefined : byId.get(up);
  }
});

const idle = self.get('(idle) (native/V8):0') ?? 0;
function print(title: string, counts: Map<string, number>): void {
  console.log(`\n${title}`);
  const rows = [...counts].sort((a, b) => b[1] - a[1]).slice(0, top);
  for (const [key, count] of rows) {
    const share = ((100 * count) / kept).toFixed(1).padStart(5);
    const busy = ((100 * count) / Math.max(1, kept - idle)).toFixed(1).padStart(5);
    console.log(`${share}% ${busy}%busy  ${key}`);
  }
}

if (values.timeline)
  console.log(
    `busy % per second: ${Array.from(seconds, (second, at) => `${at}:${second === undefined ? 0 : Math.round((100 * second[1]) / second[0])}`).join(' ')}`,
  );
console.log(`${file}: ${kept} samples kept of ${profile.samples.length}, ${((100 * idle) / kept).toFixed(1)}% idle`);
print('self time (function place:line)', self);
print('inclusive time (function place:line)', inclusive);
print('self time per file', perPlace);
if (values.callers !== undefined) print(`stacks of ${values.callers} (self time)`, callerStacks);
