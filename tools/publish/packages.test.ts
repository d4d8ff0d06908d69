/**
 * The published packages as npm would publish them: each manifest follows one scheme (version, engines,
 * exports with the @lockstep/source condition, references for the build), each tarball holds the build and
 * no tests, fixtures or sources, and the built code runs without TypeScript. Needs `npm run build` first
 * (CI runs it just before): `npm run build && node --test tools/publish/packages.test.ts`.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const SOURCE_CONDITION = '@lockstep/source';
/** Kept in step with the minimum that docs and the consumer test name. */
const ENGINES = '^22.20.0 || >=24.11.0';

interface Manifest {
  name: string;
  version: string;
  private?: boolean;
  type?: string;
  engines?: { node?: string };
  bin?: Record<string, string>;
  types?: string;
  exports: Record<string, string | Record<string, string>>;
  files?: string[];
  dependencies?: Record<string, string>;
  peerDependencies?: Record<string, string>;
  publishConfig?: { access?: string };
}

interface Packed {
  name: string;
  version: string;
  files: { path: string }[];
}

const readJson = <T>(path: string): T => JSON.parse(readFileSync(path, 'utf8')) as T;
const rootVersion = readJson<{ version: string }>(join(ROOT, 'package.json')).version;
const workspaces = readdirSync(join(ROOT, 'packages'))
  .filter((dir) => existsSync(join(ROOT, 'packages', dir, 'package.json')))
  .map((dir) => ({
    dir: `packages/${dir}`,
    manifest: readJson<Manifest>(join(ROOT, 'packages', dir, 'package.json')),
  }));
const published = workspaces.filter(({ manifest }) => manifest.private !== true);
const internal = (manifest: Manifest): Record<string, string> =>
  Object.fromEntries(
    Object.entries({ ...manifest.dependencies, ...manifest.peerDependencies }).filter(([name]) =>
      name.startsWith('@lockstep/'),
    ),
  );

const run = promisify(execFile);
/** Node for the built code alone: no condition pointing at the sources, and no type stripping to fall back on. */
const builtNode = (args: string[]) =>
  run(process.execPath, ['--no-experimental-strip-types', ...args], {
    cwd: ROOT,
    env: { ...process.env, NODE_OPTIONS: '' },
    timeout: 60_000,
  });

describe('every public package follows the publishing scheme', () => {
  it('testkit stays private, and the others are public packages', () => {
    assert.equal(workspaces.find(({ manifest }) => manifest.name === '@lockstep/testkit')?.manifest.private, true);
    assert.deepEqual(published.map(({ manifest }) => manifest.name).sort(), [
      '@lockstep/cli',
      '@lockstep/control-plane',
      '@lockstep/guard',
      '@lockstep/identity',
      '@lockstep/monitor',
      '@lockstep/policy',
      '@lockstep/proxy',
      '@lockstep/scanner',
      '@lockstep/workload',
    ]);
  });

  for (const { dir, manifest } of published) {
    describe(manifest.name, () => {
      it(`is version ${rootVersion} and pins every @lockstep dependency to it`, () => {
        assert.equal(manifest.version, rootVersion);
        for (const [name, range] of Object.entries(internal(manifest))) {
          assert.equal(range, rootVersion, `${name} must be pinned to ${rootVersion}`);
          assert.notEqual(name, '@lockstep/testkit', 'testkit is for tests only: a devDependency at most');
        }
      });

      it(`is an ES module package for Node ${ENGINES}, published publicly`, () => {
        assert.equal(manifest.type, 'module');
        assert.equal(manifest.engines?.node, ENGINES);
        assert.equal(manifest.publishConfig?.access, 'public');
      });

      it('exports the sources under @lockstep/source, else the build with its types', () => {
        for (const [subpath, target] of Object.entries(manifest.exports)) {
          if (typeof target === 'string') {
            assert.doesNotMatch(target, /^\.\/src\//, `${subpath}: a source file needs the three conditions`);
            continue;
          }
          assert.deepEqual(
            Object.keys(target),
            [SOURCE_CONDITION, 'types', 'default'],
            `${subpath}: conditions in this order`,
          );
          const source = target[SOURCE_CONDITION]!;
          assert.ok(existsSync(join(ROOT, dir, source)), `${subpath}: ${source} exists`);
          const built = source.replace(/^\.\/src\//, './dist/').replace(/\.ts$/, '');
          assert.equal(target.types, `${built}.d.ts`);
          assert.equal(target.default, `${built}.js`);
        }
        const main = manifest.exports['.'];
        assert.equal(manifest.types, typeof main === 'string' ? undefined : main?.types);
      });

      it('builds after exactly the @lockstep packages it depends on', () => {
        const config = readJson<{ references?: { path: string }[] }>(join(ROOT, dir, 'tsconfig.build.json'));
        const references = (config.references ?? []).map(({ path }) =>
          path.replace(/^\.\.\/(.+)\/tsconfig\.build\.json$/, '@lockstep/$1'),
        );
        assert.deepEqual(references.sort(), Object.keys(internal(manifest)).sort());
      });
    });
  }
});

describe('npm pack', async () => {
  const { stdout } = await run(
    'npm',
    ['pack', '--dry-run', '--json', '--ignore-scripts', ...published.map(({ dir }) => `--workspace=${dir}`)],
    { cwd: ROOT, maxBuffer: 64 * 1024 * 1024, timeout: 120_000 },
  );
  const packs = new Map((JSON.parse(stdout) as Packed[]).map((pack) => [pack.name, pack]));

  for (const { manifest } of published) {
    it(`${manifest.name}: ships its build, README and assets, and no tests, fixtures or sources`, () => {
      const files = packs.get(manifest.name)?.files.map(({ path }) => path) ?? [];
      assert.ok(files.length > 0, `${manifest.name} was not packed: run npm run build first`);
      const refused = files.filter(
        (path) =>
          /(^|\/)(test|tests|fixtures|src)\//.test(path) ||
          /\.test\.|test-support\.|\.tsbuildinfo$/.test(path) ||
          (path.endsWith('.ts') && !path.endsWith('.d.ts')),
      );
      assert.deepEqual(refused, []);
      const targets = [
        'package.json',
        'README.md',
        ...Object.values(manifest.bin ?? {}),
        ...Object.values(manifest.exports).flatMap((target) =>
          typeof target === 'string' ? [target] : [target.types!, target.default!],
        ),
      ].map((path) => path.replace(/^\.\//, ''));
      for (const target of targets)
        assert.ok(files.includes(target), `${target} is in the tarball (built? npm run build)`);
      for (const js of files.filter((path) => path.startsWith('dist/') && path.endsWith('.js'))) {
        assert.ok(files.includes(`${js}.map`), `${js}.map`);
        assert.ok(files.includes(js.replace(/\.js$/, '.d.ts')), js.replace(/\.js$/, '.d.ts'));
      }
    });
  }
});

describe('npm pack: assets read at run time', async () => {
  const { stdout } = await run(
    'npm',
    ['pack', '--dry-run', '--json', '--ignore-scripts', '--workspace=packages/proxy'],
    { cwd: ROOT, maxBuffer: 16 * 1024 * 1024, timeout: 120_000 },
  );
  it('@lockstep/proxy ships every .proto file its gRPC decision service loads (proto/, beside dist/)', () => {
    const files = (JSON.parse(stdout) as Packed[])[0]?.files.map(({ path }) => path) ?? [];
    const protos = readdirSync(join(ROOT, 'packages/proxy/proto'), { recursive: true, encoding: 'utf8' })
      .filter((path) => path.endsWith('.proto'))
      .map((path) => `proto/${path}`);
    assert.ok(protos.includes('proto/envoy/service/auth/v3/external_auth.proto'));
    for (const proto of protos) assert.ok(files.includes(proto), `${proto} is in the tarball`);
  });
});

describe('the build runs on its own', () => {
  it('every export of every public package imports with no sources and no type stripping', async () => {
    const specifiers = published.flatMap(({ manifest }) =>
      Object.entries(manifest.exports)
        .filter(([, target]) => typeof target !== 'string')
        .map(([subpath]) => `${manifest.name}${subpath.slice(1)}`),
    );
    const script =
      `for (const s of ${JSON.stringify(specifiers)}) { const url = import.meta.resolve(s); ` +
      `if (!url.includes('/dist/')) throw new Error(s + ' resolved to ' + url); await import(s); } console.log('imported', ${specifiers.length});`;
    const { stdout } = await builtNode(['--input-type=module', '-e', script]);
    assert.equal(stdout.trim(), `imported ${specifiers.length}`);
  });

  it('lockstep --version runs the built command and prints the package version', async () => {
    const cli = published.find(({ manifest }) => manifest.name === '@lockstep/cli')!;
    const { stdout } = await builtNode([join(ROOT, cli.dir, cli.manifest.bin!.lockstep!), '--version']);
    assert.equal(stdout.trim(), `lockstep ${cli.manifest.version}`);
  });
});
