/**
 * A guarded service installs and loads no server code: what importing the workload package (with the
 * guard and its node:http adapter, as a service does) loads in a fresh process holds nothing of the
 * control plane — not the package, nor Fastify, oidc-provider or pg — and its manifest depends on
 * the control plane for tests only.
 */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { it } from 'node:test';
import { packagesLoadedBy } from '@lockstep/testkit';

const ROOT = fileURLToPath(new URL('../../../', import.meta.url));
const SERVER = ['@lockstep/control-plane', '@lockstep/monitor', 'express', 'fastify', 'oidc-provider', 'pg'];

it('a service importing the guard, its node:http adapter and the workload package loads no server package', () => {
  const code = ['@lockstep/guard', '@lockstep/guard/http', '@lockstep/workload']
    .map((specifier) => `await import('${specifier}');`)
    .join('\n');
  const loaded = packagesLoadedBy(code, { cwd: ROOT, conditions: ['@lockstep/source'] });
  assert.ok(loaded.includes('@lockstep/workload') && loaded.includes('undici'), loaded.join(', '));
  assert.deepEqual(
    loaded.filter((name) => SERVER.includes(name)),
    [],
  );
});

it('depends on the control plane for its tests only', () => {
  const manifest = JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8')) as Record<
    string,
    Record<string, string> | undefined
  >;
  for (const field of ['dependencies', 'peerDependencies', 'optionalDependencies']) {
    assert.deepEqual(
      Object.keys(manifest[field] ?? {}).filter((name) => SERVER.includes(name)),
      [],
      field,
    );
  }
});
