/**
 * The Node.js a consumer run uses. Node 24 is the repository's own (the `node` devDependency); Node 22
 * comes from the `node@22` package of the npm registry, which installs the platform's binary, into a
 * cache outside the repository that later runs reuse. Either is put first in PATH through a directory
 * of its own holding only `node`, so that everything the project runs — npm, npx, the `lockstep` bin's
 * `#!/usr/bin/env node` — runs on it, and nothing else of the repository is on the PATH.
 */
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, realpathSync, symlinkSync, writeFileSync } from 'node:fs';
import { homedir } from 'node:os';
import { join } from 'node:path';

export type NodeMajor = 22 | 24;

/** Below these, the packages' `engines` refuse (the CHANGELOG and the guide say the same). */
const MINIMUM: Readonly<Record<NodeMajor, readonly [number, number]>> = { 22: [22, 20], 24: [24, 11] };

export interface NodeRuntime {
  readonly major: NodeMajor;
  /** The binary itself. */
  readonly binary: string;
  readonly version: string;
}

export function cacheDirectory(env: NodeJS.ProcessEnv): string {
  const base =
    env.XDG_CACHE_HOME !== undefined && env.XDG_CACHE_HOME !== '' ? env.XDG_CACHE_HOME : join(homedir(), '.cache');
  return join(base, 'lockstep-ci');
}

function versionOf(binary: string): string {
  return execFileSync(binary, ['--version'], { encoding: 'utf8', env: { PATH: process.env.PATH ?? '' } }).trim();
}

function check(major: NodeMajor, binary: string): NodeRuntime {
  const version = versionOf(binary);
  const [got, minor] = version.replace(/^v/, '').split('.').map(Number);
  const [wanted, least] = MINIMUM[major];
  if (got !== wanted || (minor ?? 0) < least)
    throw new Error(
      `${binary} is Node ${version}; the consumer run on Node ${major} needs ${wanted}.${least} or later`,
    );
  return { major, binary, version };
}

/**
 * Node 22 from the npm registry, installed once into `<cache>/node22` with the repository's Node 24 and
 * npm (`env`, whose PATH has Node 24 first).
 */
function node22(cache: string, env: NodeJS.ProcessEnv, say: (line: string) => void): NodeRuntime {
  const prefix = join(cache, 'node22');
  const binary = join(prefix, 'node_modules', 'node', 'bin', 'node');
  if (existsSync(binary)) return check(22, binary);
  say(`installing node@22 from the npm registry into ${prefix}`);
  mkdirSync(prefix, { recursive: true });
  // The `node` package fetches the binary in its install script: allowed here, and only for it.
  writeFileSync(
    join(prefix, 'package.json'),
    `${JSON.stringify({ private: true, allowScripts: { node: true } }, null, 2)}\n`,
  );
  execFileSync('npm', ['install', '--prefix', prefix, '--no-audit', '--no-fund', 'node@22'], {
    env,
    stdio: 'inherit',
    timeout: 300_000,
  });
  return check(22, binary);
}

export function provideNode(
  major: NodeMajor,
  repositoryRoot: string,
  cache: string,
  env: NodeJS.ProcessEnv,
  say: (line: string) => void,
): NodeRuntime {
  if (major === 24) return check(24, realpathSync(join(repositoryRoot, 'node_modules', '.bin', 'node')));
  return node22(cache, env, say);
}

/** A directory holding only `node` → the runtime's binary: what goes first in the project's PATH. */
export function nodeBinDirectory(runtime: NodeRuntime, parent: string): string {
  const dir = join(parent, `node${runtime.major}-bin`);
  mkdirSync(dir, { recursive: true });
  const link = join(dir, 'node');
  if (!existsSync(link)) symlinkSync(runtime.binary, link);
  return dir;
}
