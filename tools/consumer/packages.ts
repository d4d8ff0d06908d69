/**
 * The repository's public packages as npm would publish them (`npm pack`, which builds each first),
 * and the one change the consumer test makes to the guide: `npm install @lockstep/x …` installs those
 * tarballs instead of the registry's versions — with the other @lockstep tarballs they depend on, since
 * the registry has none of this version. Third-party dependencies come from the registry, as a reader's
 * would.
 */
import { execFileSync } from 'node:child_process';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { join, resolve } from 'node:path';

interface Manifest {
  readonly name: string;
  readonly version: string;
  readonly private?: boolean;
  readonly dependencies?: Readonly<Record<string, string>>;
  readonly peerDependencies?: Readonly<Record<string, string>>;
}

export interface PackedPackage {
  readonly name: string;
  readonly version: string;
  readonly tarball: string;
  /** The @lockstep packages it needs installed beside it. */
  readonly needs: readonly string[];
}

const readManifest = (path: string) => JSON.parse(readFileSync(path, 'utf8')) as Manifest;

/** Packs every package of packages/* that is not private into `destination`. */
export function packPublicPackages(
  root: string,
  destination: string,
  env: NodeJS.ProcessEnv,
): Map<string, PackedPackage> {
  const workspaces = readdirSync(join(root, 'packages'))
    .map((dir) => ({ dir: `packages/${dir}`, file: join(root, 'packages', dir, 'package.json') }))
    .filter(({ file }) => existsSync(file))
    .map(({ dir, file }) => ({ dir, manifest: readManifest(file) }))
    .filter(({ manifest }) => manifest.private !== true);
  const stdout = execFileSync(
    'npm',
    ['pack', '--json', '--pack-destination', destination, ...workspaces.map(({ dir }) => `--workspace=${dir}`)],
    {
      cwd: root,
      env,
      encoding: 'utf8',
      maxBuffer: 64 * 1024 * 1024,
      timeout: 300_000,
      stdio: ['ignore', 'pipe', 'pipe'],
    },
  );
  const packed = new Map(
    (JSON.parse(stdout) as Array<{ name: string; filename: string }>).map((entry) => [entry.name, entry.filename]),
  );
  const packages = new Map<string, PackedPackage>();
  for (const { manifest } of workspaces) {
    const filename = packed.get(manifest.name);
    if (filename === undefined) throw new Error(`npm pack did not pack ${manifest.name}`);
    const needs = Object.keys({ ...manifest.dependencies, ...manifest.peerDependencies }).filter((name) =>
      name.startsWith('@lockstep/'),
    );
    packages.set(manifest.name, {
      name: manifest.name,
      version: manifest.version,
      tarball: resolve(destination, filename),
      needs,
    });
  }
  return packages;
}

/** `names` and every @lockstep package they need, transitively. */
function closure(names: readonly string[], packages: ReadonlyMap<string, PackedPackage>): string[] {
  const seen = new Set<string>();
  const visit = (name: string) => {
    if (seen.has(name)) return;
    const pack = packages.get(name);
    if (pack === undefined)
      throw new Error(`the guide installs ${name}, which is not a public package of this repository`);
    seen.add(name);
    for (const needed of pack.needs) visit(needed);
  };
  for (const name of names) visit(name);
  return [...seen];
}

/**
 * The guide's `npm install` line with each `@lockstep/x` replaced by its tarball, and the tarballs those
 * need added; any other line is returned as it is.
 */
export function withTarballs(command: string, packages: ReadonlyMap<string, PackedPackage>): string {
  const words = command.split(/\s+/);
  if (words[0] !== 'npm' || (words[1] !== 'install' && words[1] !== 'i')) return command;
  const named = words.slice(2).filter((word) => word.startsWith('@lockstep/'));
  if (named.length === 0) return command;
  const all = closure(named, packages);
  const tarball = (name: string) => packages.get(name)?.tarball ?? name;
  const rest = all.filter((name) => !named.includes(name)).map(tarball);
  return [
    ...words.slice(0, 2),
    ...words.slice(2).map((word) => (word.startsWith('@lockstep/') ? tarball(word) : word)),
    ...rest,
  ].join(' ');
}

/**
 * Every @lockstep package in the project came from one of the tarballs (not the registry, not a link
 * into the repository), at the packed version.
 */
export function checkInstalledFromTarballs(project: string, packages: ReadonlyMap<string, PackedPackage>): string[] {
  const lock = JSON.parse(readFileSync(join(project, 'node_modules', '.package-lock.json'), 'utf8')) as {
    packages: Record<string, { version?: string; resolved?: string; link?: boolean }>;
  };
  const problems: string[] = [];
  const installed: string[] = [];
  for (const [path, entry] of Object.entries(lock.packages)) {
    const name = /(?:^|\/)node_modules\/(@lockstep\/[^/]+)$/.exec(path)?.[1];
    if (name === undefined) continue;
    installed.push(name);
    const pack = packages.get(name);
    if (pack === undefined) problems.push(`${path}: ${name} is no public package of this repository`);
    else if (entry.link === true) problems.push(`${path} is a link, not an installed tarball`);
    else if (entry.version !== pack.version)
      problems.push(`${path} is version ${String(entry.version)}, not ${pack.version}`);
    else if (entry.resolved === undefined || resolve(project, entry.resolved.replace(/^file:/, '')) !== pack.tarball) {
      problems.push(`${path} came from ${String(entry.resolved)}, not ${pack.tarball}`);
    }
  }
  if (installed.length === 0) problems.push('no @lockstep package is installed');
  return problems;
}
