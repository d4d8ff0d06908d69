/**
 * Which packages a piece of code really loads: a process started with `--import RECORD_LOADS` records
 * every module file it loads (ESM and CommonJS alike, through a synchronous module hook), and
 * `packageOf` names the package each file belongs to. Static imports say what a package may load;
 * this says what a process did load — a test that a guarded service loads no framework, no server
 * package, and a benchmark that sums the size of what it loaded.
 */
import { execFileSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

/**
 * `node --import <this> …`: records the URL of every module file the process loads, in a Set at
 * `globalThis[Symbol.for('lockstep.testkit.loadedFiles')]` that the process reads when asked.
 */
export const RECORD_LOADS = `data:text/javascript,${encodeURIComponent(`
import { registerHooks } from 'node:module';
const loaded = globalThis[Symbol.for('lockstep.testkit.loadedFiles')] = new Set();
registerHooks({ load(url, context, next) { if (url.startsWith('file:')) loaded.add(url); return next(url, context); } });
`)}`;

export interface LoadedPackage {
  readonly name: string;
  /** The package's directory (its package.json is there). */
  readonly dir: string;
}

/**
 * The package a module file belongs to: under node_modules, the directory right below the last
 * `node_modules` (two levels for a scope), since a package may hold package.json files of its own
 * deeper down; elsewhere (a workspace package), the nearest package.json above it that has a name.
 */
export function packageOf(fileUrl: string): LoadedPackage | null {
  const path = fileURLToPath(fileUrl);
  const installed = /^(.*[\\/]node_modules[\\/](?:@[^\\/]+[\\/])?[^\\/]+)[\\/]/.exec(path);
  if (installed !== null) {
    const dir = installed[1] as string;
    const { name } = JSON.parse(readFileSync(join(dir, 'package.json'), 'utf8')) as { name?: unknown };
    return typeof name === 'string' ? { name, dir } : null;
  }
  let dir = dirname(path);
  for (;;) {
    const manifest = join(dir, 'package.json');
    if (existsSync(manifest)) {
      const { name } = JSON.parse(readFileSync(manifest, 'utf8')) as { name?: unknown };
      if (typeof name === 'string') return { name, dir };
    }
    const parent = dirname(dir);
    if (parent === dir) return null;
    dir = parent;
  }
}

/**
 * The packages (by name, sorted) that `code` — an ES module body, e.g. `await import('@lockstep/guard')` —
 * loads in a fresh Node process started in `cwd` with `conditions` (export conditions).
 */
export function packagesLoadedBy(code: string, options: { cwd: string; conditions?: readonly string[] }): string[] {
  const report = `${code}\nprocess.stdout.write(JSON.stringify([...globalThis[Symbol.for('lockstep.testkit.loadedFiles')]]));`;
  const output = execFileSync(
    process.execPath,
    [
      ...(options.conditions ?? []).map((condition) => `--conditions=${condition}`),
      '--import',
      RECORD_LOADS,
      '--input-type=module',
      '--eval',
      report,
    ],
    { cwd: options.cwd, encoding: 'utf8', env: { ...process.env, NODE_OPTIONS: '' } },
  );
  const files = JSON.parse(output) as string[];
  return [...new Set(files.flatMap((file) => packageOf(file)?.name ?? []))].sort();
}
