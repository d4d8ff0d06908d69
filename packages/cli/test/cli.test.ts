/**
 * The `lockstep` command as a user runs it: the control plane in a child process with an empty
 * LOCKSTEP_HOME, then the admin commands against it over mTLS.
 */
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { cpSync, existsSync, mkdirSync, mkdtempSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, before, describe, it } from 'node:test';
import { joinControlPlane } from '@lockstep/control-plane';
import { main } from '../src/main.ts';

const BIN = fileURLToPath(new URL('../bin/lockstep.js', import.meta.url));
const home = mkdtempSync(join(tmpdir(), 'lockstep-cli-'));
const policyDir = join(home, 'policies');
let child: ChildProcess;
let output = '';

async function run(...argv: string[]): Promise<{ code: number; out: string[]; err: string[] }> {
  const out: string[] = [];
  const err: string[] = [];
  const previous = process.env.LOCKSTEP_HOME;
  process.env.LOCKSTEP_HOME = join(home, 'state');
  try {
    const code = await main(
      argv,
      (line) => out.push(line),
      (line) => err.push(line),
    );
    return { code, out, err };
  } finally {
    if (previous === undefined) delete process.env.LOCKSTEP_HOME;
    else process.env.LOCKSTEP_HOME = previous;
  }
}

before(async () => {
  cpSync(new URL('../../guard/example/policies/', import.meta.url), policyDir, { recursive: true });
  // An external issuer that does not answer (loopback port 9): the control plane starts anyway and says so.
  mkdirSync(join(home, 'state'), { recursive: true, mode: 0o700 });
  writeFileSync(
    join(home, 'state', 'idp.json'),
    JSON.stringify({
      resource: { indicator: 'https://shop.test/api', scopes: ['orders:read'] },
      clients: [],
      externalIssuers: [{ issuer: 'https://127.0.0.1:9/oidc', audience: 'https://shop.test/api' }],
    }),
  );
  child = spawn(
    process.execPath,
    [BIN, 'control-plane', '--trust-domain', 'shop.test', '--port', '0', '--policy-dir', policyDir],
    { env: { ...process.env, LOCKSTEP_HOME: join(home, 'state') }, stdio: ['ignore', 'pipe', 'pipe'] },
  );
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`control plane did not start:\n${output}`)), 30_000);
    const collect = (chunk: Buffer) => {
      output += chunk.toString();
      if (output.includes('listening on')) {
        clearTimeout(timer);
        resolve();
      }
    };
    child.stdout?.on('data', collect);
    child.stderr?.on('data', collect);
    child.once('exit', (code) => reject(new Error(`control plane exited (${code}):\n${output}`)));
  });
});

after(async () => {
  if (child.exitCode === null) {
    child.kill('SIGTERM');
    await new Promise((resolve) => child.once('exit', resolve));
  }
  rmSync(home, { recursive: true, force: true });
});

describe('lockstep CLI', () => {
  it('starts the control plane with embedded defaults, says loudly that its keys are development material, and keeps state private', () => {
    assert.match(output, /WARNING created a NEW workload CA for shop\.test/);
    assert.match(output, /listening on https:\/\/127\.0\.0\.1:\d+ \(store: sqlite\)/);
    assert.match(output, /policy [0-9a-f]{64} in force/);
    assert.equal(statSync(join(home, 'state')).mode & 0o777, 0o700);
    assert.equal(statSync(join(home, 'state', 'admin', 'admin.key.pem')).mode & 0o777, 0o600);
    assert.equal(statSync(join(home, 'state', 'control-plane.db')).mode & 0o777, 0o600);
  });

  it('creates a join token that bootstraps the service, revokes, and lists registered services', async () => {
    const created = await run('join-token', 'create', 'orders', '--ttl', '120');
    assert.equal(created.code, 0, created.err.join('\n'));
    const token = created.out[0] ?? '';
    assert.match(token, /^ljt1\./);
    const url = /listening on (\S+)/.exec(output)?.[1] ?? '';
    const joined = await joinControlPlane({ url, trustDomain: 'shop.test', joinToken: token, service: 'orders' });
    assert.equal(joined.spiffeId, 'spiffe://shop.test/svc/orders');

    const revoked = await run('revoke', 'sub', 'mallory', '--reason', 'account takeover');
    assert.equal(revoked.code, 0, revoked.err.join('\n'));
    assert.match(revoked.out[0] ?? '', /revoked sub mallory \(feed position \d+\)/);

    const listed = await run('services');
    assert.equal(listed.code, 0, listed.err.join('\n'));
    assert.deepEqual(listed.out, ['no guard has registered yet']);

    const status = await run('policy', 'status');
    assert.equal(status.code, 0, status.err.join('\n'));
    assert.match(status.out[0] ?? '', /^policy in force: [0-9a-f]{64}$/);
  });

  it('adds a user with a generated password shown once, and refuses a taken or malformed name', async () => {
    const added = await run('user', 'add', 'alice', '--role', 'customer', '--tenant', 'acme');
    assert.equal(added.code, 0, added.err.join('\n'));
    assert.match(added.out[0] ?? '', /^user alice created; password \(shown once\): [\w-]{20}$/);
    const again = await run('user', 'add', 'alice');
    assert.equal(again.code, 2);
    assert.match(again.err.join('\n'), /409 LOCKSTEP_CP_USER_EXISTS/);
    const status = await run('user', 'add', 'Bad Name');
    assert.equal(status.code, 2);
    assert.match(status.err.join('\n'), /a user name is/);
    assert.match(
      output,
      /identity provider: https:\/\/127\.0\.0\.1:\d+\/oidc \(0 clients\); dashboard: https:\/\/127\.0\.0\.1:\d+\/dashboard \(role admin\)/,
    );
    assert.match(
      output,
      /WARNING could not read the discovery document of https:\/\/127\.0\.0\.1:9\/oidc .*refused until it answers \(next try in 30 s\)/,
    );
  });

  it('rotates the Txn-Token and identity-provider keys: the published next key signs from now on', async () => {
    for (const key of ['txn-token', 'idp']) {
      const rotated = await run('keys', 'rotate', key);
      assert.equal(rotated.code, 0, rotated.err.join('\n'));
      assert.match(
        rotated.out[0] ?? '',
        new RegExp(`^${key} keys rotated: \\S+ signs now \\(it was published as next\\)`),
      );
    }
    const ca = await run('ca', 'status');
    assert.equal(ca.code, 0, ca.err.join('\n'));
    assert.equal(ca.out[0], 'root rotation: stable');
    assert.match(ca.out[1] ?? '', /^current {3}CN=Lockstep root \(shop\.test\)/);
    const verified = await run('audit', 'verify');
    assert.equal(verified.code, 0, verified.err.join('\n'));
    assert.match(verified.out[0] ?? '', /^checkpoints: \d+ links, newest \d+ \((start|tick)\) at \S+Z$/);
    // The admin calls above (join token, revocation, users, rotations) are the control plane's own events.
    assert.match(
      verified.out[1] ?? '',
      /^spiffe:\/\/shop\.test\/lockstep\/control-plane: ([5-9]|\d\d+) events, \d+ checkpointed$/,
    );
    assert.match(verified.out.at(-1) ?? '', /^audit trail verified: 1 sources, no problem found/);
    // The newest checkpoint, for a witness outside the store; the trail extends it.
    const witness = await run('audit', 'checkpoint');
    assert.equal(witness.code, 0, witness.err.join('\n'));
    assert.match(witness.out[0] ?? '', /^[\w-]+\.[\w-]+\.[\w-]+$/);
    writeFileSync(join(home, 'witness.jws'), `${witness.out[0]}\n`);
    const extended = await run('audit', 'verify', '--against', join(home, 'witness.jws'));
    assert.equal(extended.code, 0, extended.out.join('\n'));
    assert.ok(
      extended.out.some((line) => /^note {2}the trail extends the witnessed link \d+ of /.test(line)),
      extended.out.join('\n'),
    );
    const bad = await run('audit', 'verify', '--as-of', 'yesterday');
    assert.deepEqual(
      [bad.code, bad.err],
      [2, ['lockstep: --as-of yesterday: not a time; give an ISO 8601 time, e.g. 2026-12-07T10:00:00Z']],
    );
    const keys = await run('audit', 'keys');
    assert.equal(
      (JSON.parse(keys.out.join('\n')) as { keys: unknown[] }).keys.length,
      2,
      'current and next checkpoint keys',
    );
    const unknown = await run('keys', 'rotate', 'root');
    assert.equal(unknown.code, 2);
    assert.match(unknown.err.join('\n'), /rotates: txn-token, idp/);
  });

  it('init creates dev keys in an empty home, loudly, and keeps them on a second run', async () => {
    const previous = process.env.LOCKSTEP_HOME;
    process.env.LOCKSTEP_HOME = join(home, 'fresh');
    try {
      // A read-only command creates no key: before init, there are none to show.
      const none: string[] = [];
      assert.equal(
        await main(
          ['audit', 'keys'],
          () => {},
          (line) => none.push(line),
        ),
        2,
      );
      assert.match(none.join('\n'), /no audit keys exist in .*fresh\/keys yet: the control plane creates them/);
      assert.equal(existsSync(join(home, 'fresh', 'keys')), false, 'not even the key directory');
      const out: string[] = [];
      const err: string[] = [];
      assert.equal(
        await main(
          ['init', '--trust-domain', 'fresh.test'],
          (line) => out.push(line),
          (line) => err.push(line),
        ),
        0,
      );
      assert.match(err.join('\n'), /WARNING created a NEW workload CA for fresh\.test/);
      assert.match(out[0] ?? '', /DEVELOPMENT material/);
      assert.equal(statSync(join(home, 'fresh', 'keys', 'root.key.pem')).mode & 0o777, 0o600);
      assert.equal(statSync(join(home, 'fresh', 'keys', 'idp-cookie.secret')).mode & 0o777, 0o600);
      const again: string[] = [];
      assert.equal(
        await main(
          ['init'],
          (line) => again.push(line),
          () => {},
        ),
        0,
      );
      assert.match(again[0] ?? '', /every key exists already/);
    } finally {
      if (previous === undefined) delete process.env.LOCKSTEP_HOME;
      else process.env.LOCKSTEP_HOME = previous;
    }
  });

  it('validates a policy directory and runs its test cases, with a readable diff on a failure', async () => {
    const valid = await run('policy', 'validate', policyDir);
    assert.equal(valid.code, 0, valid.out.join('\n'));
    assert.match(valid.out[0] ?? '', /valid — \d+ policies, version [0-9a-f]{64}$/);
    const cases = join(home, 'cases.yaml');
    writeFileSync(
      cases,
      [
        'trustDomain: shop.test',
        'cases:',
        '  - { name: customers read through the gateway, principal: gateway, action: orders:read, resource: orders, context: { sub: alice, roles: [customer] }, expect: allow, policy: gateway-customer-orders }',
        '  - { name: a wrong expectation, principal: reports, action: orders:read, resource: orders, context: { sub: alice, roles: [customer] }, expect: allow }',
      ].join('\n'),
    );
    const tested = await run('policy', 'test', policyDir, '--cases', cases);
    assert.equal(tested.code, 1);
    assert.deepEqual(tested.out, [
      '✓ customers read through the gateway',
      '✗ a wrong expectation\n    expected allow, got deny (no policy matched)',
      `1 passed, 1 failed (${policyDir}, version ${/version ([0-9a-f]{12})/.exec(valid.out[0] ?? '')?.[1]})`,
    ]);
    writeFileSync(
      cases,
      'cases:\n  - { name: x, principal: spiffe://shop.test/svc/gateway, action: a, resource: orders, expect: allow, colour: blue }\n',
    );
    const malformed = await run('policy', 'test', policyDir, '--cases', cases);
    assert.equal(malformed.code, 2);
    assert.match(malformed.err.join('\n'), /case 1: unknown field "colour"/);
    writeFileSync(join(home, 'broken.cedar'), 'permit (principal, action, resource) when { context.nope };\n');
    cpSync(policyDir, join(home, 'broken-policies'), { recursive: true });
    cpSync(join(home, 'broken.cedar'), join(home, 'broken-policies', 'broken.cedar'));
    const refused = await run('policy', 'validate', join(home, 'broken-policies'));
    assert.equal(refused.code, 1);
    assert.match(refused.out[0] ?? '', /REFUSED — .*broken\.cedar/);
  });

  it('answers mistakes with what to do instead (exit code 2)', async () => {
    const unknown = await run('frobnicate');
    assert.equal(unknown.code, 2);
    assert.match(unknown.err.join('\n'), /usage:/);
    const incomplete = await run('revoke', 'sub', 'mallory');
    assert.equal(incomplete.code, 2);
    assert.match(incomplete.err.join('\n'), /--reason <why>/);
    const otherDomain = await run('control-plane', '--trust-domain', 'other.test', '--port', '0');
    assert.equal(otherDomain.code, 2);
    assert.match(otherDomain.err.join('\n'), /belongs to trust domain shop\.test/);
    const refused = await run('join-token', 'create', 'Not A Service');
    assert.equal(refused.code, 2);
    assert.match(refused.err.join('\n'), /refused \(400 LOCKSTEP_CP_REQUEST_INVALID\)/);
  });

  it('scan: exit 2 when the scan cannot run — nothing registered with an address, or a wrong manifest — saying why', async () => {
    const nothing = await run('scan', '--no-monitor');
    assert.equal(nothing.code, 2, nothing.err.join('\n'));
    assert.match(nothing.err.join('\n'), /the scan could not run: nothing to scan/);
    const manifest = join(home, 'scan.yaml');
    writeFileSync(manifest, 'users:\n  a: { sub: alice }\n  b: { sub: alice }\n');
    const wrong = await run('scan', '--manifest', manifest);
    assert.equal(wrong.code, 2);
    assert.match(wrong.err.join('\n'), /scan\.yaml: users\.a and users\.b must be two different subjects/);
    const missing = await run('scan', '--manifest', join(home, 'nowhere.yaml'));
    assert.equal(missing.code, 2);
    const badRate = await run('scan', '--rate', 'fast');
    assert.equal(badRate.code, 2);
    assert.match(badRate.err.join('\n'), /--rate must be a positive number/);
  });

  it('stops cleanly on SIGTERM', async () => {
    child.kill('SIGTERM');
    const code = await new Promise<number | null>((resolve) => child.once('exit', resolve));
    assert.equal(code, 0);
    assert.match(output, /stopping/);
    const after = await run('services');
    assert.equal(after.code, 2);
    assert.match(after.err.join('\n'), /not running: start it with `lockstep control-plane`/);
  });
});
