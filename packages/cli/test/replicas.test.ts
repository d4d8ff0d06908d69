/**
 * Two replicas of the control plane on one host and one state directory (`control-plane --replica r0`
 * and `--replica r1`, on PostgreSQL with one key-encryption key), started at once on a key directory
 * that `lockstep init` filled: each has its own lock, runtime file and administrator SVID, they share
 * the keys (imported once) and the store. The admin commands ask them in turn: after the first is
 * killed (SIGKILL: no clean stop, its files stay), they still work through the other. Also what
 * `--replica` refuses: SQLite, no key-encryption key, a name that is not a word, a replica's name
 * taken, and a lone control plane beside replicas. Once they are down, what reads the database directly:
 * `audit keys` (with --schema and --kek-file; creating nothing) and `keys rewrap` for a new key-encryption
 * key. Real child processes, real PostgreSQL.
 */
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, before, describe, it } from 'node:test';
import { createKekText } from '@lockstep/control-plane';
import { openStoreAt } from '@lockstep/monitor';
import { testPostgres } from '@lockstep/testkit';
import { checkStateDirectoryFree, localState, main } from '../src/main.ts';

const BIN = fileURLToPath(new URL('../bin/lockstep.js', import.meta.url));
const POLICIES = fileURLToPath(new URL('../../guard/example/policies/', import.meta.url));
const postgres = await testPostgres();
const scratch = mkdtempSync(join(tmpdir(), 'lockstep-replicas-'));
const home = join(scratch, 'state');
const kekFile = join(scratch, 'kek');
const schema = postgres.schema();
const children = new Set<ChildProcess>();

interface Run {
  readonly child: ChildProcess;
  output(): string;
  saw(text: string): Promise<void>;
  exited(): Promise<number | null>;
}

function lockstep(argv: string[], env: Record<string, string> = {}): Run {
  const child = spawn(process.execPath, [BIN, ...argv], {
    env: { ...process.env, LOCKSTEP_HOME: home, LOCKSTEP_DATA_DIR: '', LOCKSTEP_KEK_FILE: '', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  children.add(child);
  let output = '';
  const exit = new Promise<number | null>((resolve) =>
    child.once('exit', (code) => {
      children.delete(child);
      resolve(code);
    }),
  );
  const collect = (chunk: Buffer) => {
    output += chunk.toString();
  };
  child.stdout?.on('data', collect);
  child.stderr?.on('data', collect);
  return {
    child,
    output: () => output,
    saw: (text) =>
      new Promise((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`did not say "${text}" within 60 s:\n${output}`)), 60_000);
        const check = () => {
          if (!output.includes(text)) return;
          clearTimeout(timer);
          resolve();
        };
        child.stdout?.on('data', check);
        child.stderr?.on('data', check);
        void exit.then(() => {
          clearTimeout(timer);
          reject(new Error(`exited before saying "${text}":\n${output}`));
        });
        check();
      }),
    exited: () => exit,
  };
}

function replica(name: string, ...extra: string[]): Run {
  return lockstep([
    'control-plane',
    '--replica',
    name,
    '--postgres',
    postgres.url,
    '--schema',
    schema,
    '--kek-file',
    kekFile,
    '--trust-domain',
    'shop.test',
    '--port',
    '0',
    '--policy-dir',
    POLICIES,
    ...extra,
  ]);
}

/** `main` in this process, in the shared state directory, with `env` set meanwhile. */
async function inProcess(
  env: Record<string, string | undefined>,
  ...argv: string[]
): Promise<{ code: number; out: string[]; err: string[] }> {
  const names = ['LOCKSTEP_HOME', 'LOCKSTEP_DATA_DIR', 'LOCKSTEP_CP_URLS'];
  const previous = Object.fromEntries(names.map((name) => [name, process.env[name]]));
  for (const [name, value] of Object.entries({ LOCKSTEP_DATA_DIR: undefined, LOCKSTEP_CP_URLS: undefined, ...env })) {
    if (value === undefined) delete process.env[name];
    else process.env[name] = value;
  }
  process.env.LOCKSTEP_HOME = home;
  const out: string[] = [];
  const err: string[] = [];
  try {
    const code = await main(
      argv,
      (line) => out.push(line),
      (line) => err.push(line),
    );
    return { code, out, err };
  } finally {
    for (const [name, value] of Object.entries(previous)) {
      if (value === undefined) delete process.env[name];
      else process.env[name] = value;
    }
  }
}

const urlOf = (name: string) =>
  (JSON.parse(readFileSync(join(home, 'replicas', `${name}.json`), 'utf8')) as { url: string }).url;

describe('lockstep control-plane --replica: two replicas on one state directory', { skip: postgres.skip }, () => {
  let r0: Run;
  let r1: Run;

  before(async () => {
    mkdirSync(home, { recursive: true, mode: 0o700 });
    writeFileSync(kekFile, `${createKekText()}\n`, { mode: 0o600 });
    // Keys in the key directory, as a control plane that ran alone left them: both replicas import them at once.
    const init = await inProcess({}, 'init', '--trust-domain', 'shop.test');
    assert.equal(init.code, 0, init.err.join('\n'));
    r0 = replica('r0');
    r1 = replica('r1');
    await Promise.all([r0.saw('listening on'), r1.saw('listening on')]);
  });

  after(async () => {
    for (const child of children) child.kill('SIGKILL');
    await postgres.cleanup();
    rmSync(scratch, { recursive: true, force: true });
  });

  it('gives each replica its own lock, runtime file and administrator SVID, and one identity', async () => {
    for (const name of ['r0', 'r1']) {
      assert.ok(existsSync(join(home, `control-plane.${name}.lock`)), `control-plane.${name}.lock`);
      assert.ok(existsSync(join(home, 'replicas', name, 'admin.pem')), `replicas/${name}/admin.pem`);
      assert.ok(existsSync(join(home, 'replicas', name, 'admin.key.pem')), `replicas/${name}/admin.key.pem`);
      assert.match(urlOf(name), /^https:\/\/127\.0\.0\.1:\d+$/);
    }
    assert.notEqual(urlOf('r0'), urlOf('r1'));
    for (const lone of ['control-plane.json', 'control-plane.lock', 'admin'])
      assert.equal(existsSync(join(home, lone)), false, `no ${lone}: that is the lone control plane's`);
    // Imported once (by one, or part by each when they raced), and the same keys are no "keys of its own".
    assert.match(readFileSync(join(home, 'keys', 'MOVED-TO-VAULT.txt'), 'utf8'), /moved into/);
    assert.match(r0.output() + r1.output(), /WARNING imported .*ca\.json/);
    assert.doesNotMatch(r0.output() + r1.output(), /keys of its own/);
    assert.match(r0.output(), /\(replica r0\) listening on/);
    // One CA: the same trust bundle from each replica (asked of each alone).
    const roots = await Promise.all(
      ['r0', 'r1'].map(async (name) => {
        const status = await inProcess({ LOCKSTEP_CP_URLS: urlOf(name) }, 'ca', 'status');
        assert.equal(status.code, 0, status.err.join('\n'));
        return status.out.find((line) => line.startsWith('current'));
      }),
    );
    assert.ok(roots[0] !== undefined && roots[0] === roots[1], `one root: ${roots.join(' / ')}`);
  });

  it('refuses a second start of a running replica, a lone control plane beside replicas, and replicas without a shared store or keys', async () => {
    const again = replica('r1');
    assert.equal(await again.exited(), 1, again.output());
    assert.match(again.output(), /in use by replica r1 \(pid \d+ at https:\/\/127\.0\.0\.1:\d+\): stop it first/);
    assert.match(again.output(), /or start this one with another --replica name/);
    // What a launcher asks before it touches the directory: a replica runs there.
    assert.throws(() => checkStateDirectoryFree(localState(home)), /in use by replica r[01] \(pid \d+ at https:/);

    const lone = lockstep(['control-plane', '--trust-domain', 'shop.test', '--port', '0', '--policy-dir', POLICIES]);
    assert.equal(await lone.exited(), 1, lone.output());
    assert.match(
      lone.output(),
      /in use by replica r[01] \(pid \d+ at .*\): a control plane without --replica and replicas cannot share one/,
    );
    assert.equal(existsSync(join(home, 'control-plane.lock')), false, 'the refused start left no lock');

    const sqlite = lockstep(['control-plane', '--replica', 'r2', '--port', '0']);
    assert.equal(await sqlite.exited(), 2, sqlite.output());
    assert.match(sqlite.output(), /--replica r2 .* needs PostgreSQL \(--postgres <url>\)\. SQLite is single-replica/);

    const noKek = lockstep(['control-plane', '--replica', 'r2', '--postgres', postgres.url, '--schema', schema]);
    assert.equal(await noKek.exited(), 2, noKek.output());
    assert.match(noKek.output(), /--replica r2: .* key-encryption key with --kek-file <file> \(or LOCKSTEP_KEK_FILE\)/);

    const badName = replica('R2!');
    assert.equal(await badName.exited(), 2, badName.output());
    assert.match(badName.output(), /--replica .* a short lower-case word .*e\.g\. --replica r0; got "R2!"/);
    assert.equal(existsSync(join(home, 'replicas', 'r2.json')), false);
  });

  it('runs the admin commands on whichever replica answers: after the first is killed, through the other', async () => {
    const both = `${urlOf('r0')},${urlOf('r1')}`;
    const before = await inProcess({}, 'services');
    assert.deepEqual([before.code, before.out], [0, ['no guard has registered yet']], before.err.join('\n'));

    r0.child.kill('SIGKILL');
    await r0.exited();
    // r0 asked first (LOCKSTEP_CP_URLS), refusing the connection: each command goes on to r1.
    const services = await inProcess({ LOCKSTEP_CP_URLS: both }, 'services');
    assert.deepEqual([services.code, services.out], [0, ['no guard has registered yet']], services.err.join('\n'));
    const revoked = await inProcess({ LOCKSTEP_CP_URLS: both }, 'revoke', 'sub', 'mallory', '--reason', 'test');
    assert.equal(revoked.code, 0, revoked.err.join('\n'));
    assert.match(revoked.out.join('\n'), /^revoked sub mallory \(feed position \d+\)$/);
    // Not idempotent, but never sent to r0 (no connection): r1 creates it.
    const token = await inProcess({ LOCKSTEP_CP_URLS: both }, 'join-token', 'create', 'orders');
    assert.equal(token.code, 0, token.err.join('\n'));
    assert.match(token.out[0] ?? '', /^ljt1\./);
    // A refusal is an answer: the same from any replica, said as it is.
    const lift = await inProcess({ LOCKSTEP_CP_URLS: both }, 'revoke', '--lift', 'sub', 'nobody', '--reason', 'test');
    assert.equal(lift.code, 2);
    assert.match(lift.err.join('\n'), /refused \(404 LOCKSTEP_CP_NOT_REVOKED\)/);

    // Without LOCKSTEP_CP_URLS: every replica's runtime file, r0's left behind by the kill.
    const found = await inProcess({}, 'revoke', 'sub', 'mallory', '--reason', 'again');
    assert.equal(found.code, 0, found.err.join('\n'));
    assert.match(found.out.join('\n'), /^revoked sub mallory/);

    r1.child.kill('SIGTERM');
    assert.equal(await r1.exited(), 0, r1.output());
    assert.equal(existsSync(join(home, 'control-plane.r1.lock')), false, 'a clean stop releases its lock');
    const none = await inProcess({ LOCKSTEP_CP_URLS: both }, 'services');
    assert.equal(none.code, 2);
    assert.match(
      none.err.join('\n'),
      /no control plane answers at https:\/\/127\.0\.0\.1:\d+, https:\/\/127\.0\.0\.1:\d+: start one/,
    );
  });

  it('reads the audit keys from the database without creating any, and rewraps every key under a new KEK', async () => {
    // The replicas are down (the test above): nothing writes meanwhile.
    const inDatabase = (kek: string, inSchema = schema) =>
      inProcess({}, 'audit', 'keys', '--postgres', postgres.url, '--schema', inSchema, '--kek-file', kek);
    const keys = await inDatabase(kekFile);
    assert.equal(keys.code, 0, keys.err.join('\n'));
    const jwks = JSON.parse(keys.out.join('\n')) as { keys: { kid: string }[] };
    assert.equal(jwks.keys.length, 2, 'current and next checkpoint keys');

    // A schema without keys: said, and none created (a read-only command).
    const empty = postgres.schema();
    const none = await inDatabase(kekFile, empty);
    assert.equal(none.code, 2);
    assert.match(none.err.join('\n'), new RegExp(`no audit keys exist in PostgreSQL schema ${empty} .* yet`));
    const store = await openStoreAt({ postgres: postgres.url, schema: empty });
    try {
      assert.deepEqual(await store.keyDocuments(), [], 'no key created');
    } finally {
      await store.close();
    }
    const noSchema = await inProcess({}, 'audit', 'keys', '--schema', schema);
    assert.equal(noSchema.code, 2);
    assert.match(noSchema.err.join('\n'), /--schema names the PostgreSQL schema of --postgres/);

    // A KEK rotation: the new line first, the old one after; then the new one alone opens everything.
    const newKek = createKekText('kek-new');
    const rotated = join(scratch, 'kek-rotated');
    writeFileSync(rotated, `${newKek}\n${readFileSync(kekFile, 'utf8')}`, { mode: 0o600 });
    const rewrap = await inProcess(
      {},
      'keys',
      'rewrap',
      '--postgres',
      postgres.url,
      '--schema',
      schema,
      '--kek-file',
      rotated,
    );
    assert.equal(rewrap.code, 0, rewrap.err.join('\n'));
    assert.match(
      rewrap.out.join('\n'),
      /^re-wrapped \d+ stored key document generation\(s\) under kek-new; 0 were under it already: the older key-encryption keys can go$/,
    );
    const newOnly = join(scratch, 'kek-new');
    writeFileSync(newOnly, `${newKek}\n`, { mode: 0o600 });
    const after = await inDatabase(newOnly);
    assert.equal(after.code, 0, after.err.join('\n'));
    assert.deepEqual(JSON.parse(after.out.join('\n')), jwks, 'the same keys, opened with the new KEK alone');
    const checkpoint = await inProcess({}, 'audit', 'checkpoint', '--postgres', postgres.url, '--schema', schema);
    assert.equal(checkpoint.code, 0, checkpoint.err.join('\n'));
    assert.match(checkpoint.out[0] ?? '', /^[\w-]+\.[\w-]+\.[\w-]+$/, 'the checkpoint of that schema');
  });
});
