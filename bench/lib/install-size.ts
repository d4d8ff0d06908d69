/**
 * What a project that installs some packages gets in its node_modules, measured inside this repository:
 * the packages' dependencies followed transitively (`dependencies`, `optionalDependencies` that are
 * installed, and `peerDependencies` that are not optional — npm installs those too), each resolved the
 * way Node resolves it from the package that needs it, each counted once. A package's size is what
 * it holds on disk here, less any nested node_modules (those are packages of their own). A Lockstep
 * package is counted as it ships: its `files` (the build, once `npm run build` has made it) plus its
 * manifest and README; without a build, its sources less tests stand in for it, and `built` says so.
 */
import { existsSync, lstatSync, readdirSync, readFileSync, realpathSync } from 'node:fs';
import { dirname, join, sep } from 'node:path';

export interface InstalledPackage {
  readonly name: string;
  readonly version: string;
  readonly dir: string;
  readonly bytes: number;
  /** A package of this repository (counted as it ships), not one from the registry. */
  readonly workspace: boolean;
  /** For a workspace package: whether its build was there to count. */
  readonly built: boolean;
}

interface Manifest {
  name: string;
  version: string;
  files?: string[];
  dependencies?: Record<string, string>;
  optionalDependencies?: Record<string, string>;
  peerDependencies?: Record<string, string>;
  peerDependenciesMeta?: Record<string, { optional?: boolean }>;
}

const manifestOf = (dir: string) => JSON.parse(readFileSync(join(dir, 'package.json'), 'utf8')) as Manifest;

/** The directory of package `name` as Node finds it from `from`, or null. */
function resolvePackage(name: string, from: string): string | null {
  for (let dir = from; ; dir = dirname(dir)) {
    const candidate = join(dir, 'node_modules', name);
    if (existsSync(join(candidate, 'package.json'))) return realpathSync(candidate);
    if (dirname(dir) === dir) return null;
  }
}

/** Every package that installing `roots` brings, from the directory `from` (a project's root). */
export function installClosure(roots: readonly string[], from: string): InstalledPackage[] {
  const found = new Map<string, InstalledPackage>();
  const visit = (name: string, requiredBy: string, optional: boolean) => {
    const dir = resolvePackage(name, requiredBy);
    if (dir === null) {
      if (optional) return;
      throw new Error(`${name} (needed by ${requiredBy}) is not installed: run npm install`);
    }
    if (found.has(dir)) return;
    const manifest = manifestOf(dir);
    const workspace = !dir.split(sep).includes('node_modules');
    const built = workspace && existsSync(join(dir, 'dist'));
    found.set(dir, {
      name: manifest.name,
      version: manifest.version,
      dir,
      bytes: workspace ? shippedBytes(dir, manifest, built) : treeBytes(dir),
      workspace,
      built,
    });
    for (const dependency of Object.keys(manifest.dependencies ?? {})) visit(dependency, dir, false);
    for (const dependency of Object.keys(manifest.optionalDependencies ?? {})) visit(dependency, dir, true);
    for (const peer of Object.keys(manifest.peerDependencies ?? {})) {
      if (manifest.peerDependenciesMeta?.[peer]?.optional !== true) visit(peer, dir, false);
    }
  };
  for (const root of roots) visit(root, from, false);
  return [...found.values()].sort((a, b) => b.bytes - a.bytes || a.name.localeCompare(b.name));
}

/** Bytes of the regular files under `path` (a file or a directory), nested node_modules and `skip` left out. */
function treeBytes(path: string, skip: (name: string) => boolean = () => false): number {
  const stat = lstatSync(path);
  if (stat.isFile()) return stat.size;
  if (!stat.isDirectory()) return 0;
  let bytes = 0;
  for (const entry of readdirSync(path)) {
    if (entry === 'node_modules' || skip(entry)) continue;
    bytes += treeBytes(join(path, entry), skip);
  }
  return bytes;
}

/** What `npm pack` of a workspace package ships: its `files`, manifest and README (sources less tests before a build). */
function shippedBytes(dir: string, manifest: Manifest, built: boolean): number {
  const always = readdirSync(dir).filter((entry) => /^(package\.json|readme|license|changelog)/i.test(entry));
  const listed = (manifest.files ?? ['src']).filter((entry) => !entry.startsWith('!'));
  const excluded = new Set(
    (manifest.files ?? []).filter((entry) => entry.startsWith('!')).map((entry) => entry.slice(1).split('/').at(-1)),
  );
  const shipped = built ? listed : [...listed.filter((entry) => entry !== 'dist'), 'src'];
  const isTest = (name: string) => name.endsWith('.test.ts') || name === 'test-support.ts' || excluded.has(name);
  return [...new Set([...always, ...shipped])]
    .filter((entry) => existsSync(join(dir, entry)))
    .reduce((sum, entry) => sum + treeBytes(join(dir, entry), isTest), 0);
}
