/**
 * What `lockstep control-plane` does when it cannot start, as an operator meets it: a real child
 * process on loopback, each case in a state directory of its own. It must exit (never hang) with a
 * message that names what is wrong and the fix: a port in use, an unusable key or store file, a state
 * directory in use by a running control plane (refused with its pid, the running one untouched), or
 * one that other users may write to; a lock left by a control plane that died is taken over, also when
 * its pid now belongs to another user's program or to the new control plane itself. Also the CLI's one state variable, per-command
 * help, --version, and `policy status` without a valid policy in force.
 */
import assert from 'node:assert/strict';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import {
  chmodSync,
  chownSync,
  cpSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  rmSync,
  writeFileSync,
} from 'node:fs';
import { createServer, type Server } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, describe, it } from 'node:test';
import { main } from '../src/main.ts';
import { lockStateDirectory } from '../src/state-lock.ts';
import { localState } from '../src/state.ts';

const BIN = fileURLToPath(new URL('../bin/lockstep.js', import.meta.url));
const POLICIES = fileURLToPath(new URL('../../guard/example/policies/', import.meta.url));
const scratch = mkdtempSync(join(tmpdir(), 'lockstep-startup-'));
/** Generous: a failed start must end, and a slow machine must not fail the test. */
const EXIT_DEADLINE_MS = 30_000;
const running = new Set<ChildProcess>();

after(async () => {
  for (const child of running) child.kill('SIGKILL');
  rmSync(scratch, { recursive: true, force: true });
});

let homes = 0;
function freshHome(): string {
  homes += 1;
  const home = join(scratch, `home-${homes}`);
  mkdirSync(home, { recursive: true, mode: 0o700 });
  return home;
}

interface Run {
  readonly child: ChildProcess;
  output(): string;
  /** Resolves when `text` appears in its output; rejects when it exits first. */
  saw(text: string): Promise<void>;
  /** Its exit code, or a failure when it is still running after the deadline. */
  exited(): Promise<{ code: number | null; ms: number }>;
}

function lockstep(
  home: string,
  argv: string[],
  env: Record<string, string> = {},
  user: { uid?: number; gid?: number } = {},
): Run {
  const started = performance.now();
  const child = spawn(process.execPath, [BIN, ...argv], {
    env: { ...process.env, LOCKSTEP_HOME: home, LOCKSTEP_DATA_DIR: '', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
    ...user,
  });
  running.add(child);
  let output = '';
  const collect = (chunk: Buffer) => {
    output += chunk.toString();
  };
  child.stdout?.on('data', collect);
  child.stderr?.on('data', collect);
  const exit = new Promise<{ code: number | null; ms: number }>((resolve) =>
    child.once('exit', (code) => {
      running.delete(child);
      resolve({ code, ms: performance.now() - started });
    }),
  );
  return {
    child,
    output: () => output,
    saw: (text) =>
      new Promise((resolve, reject) => {
        const check = () => {
          if (!output.includes(text)) return;
          child.stdout?.off('data', check);
          child.stderr?.off('data', check);
          resolve();
        };
        child.stdout?.on('data', check);
        child.stderr?.on('data', check);
        void exit.then(() => reject(new Error(`exited before saying "${text}":\n${output}`)));
        check();
      }),
    async exited() {
      let timer: NodeJS.Timeout | undefined;
      const deadline = new Promise<never>((_resolve, reject) => {
        timer = setTimeout(
          () => reject(new Error(`still running after ${EXIT_DEADLINE_MS} ms (it hangs):\n${output}`)),
          EXIT_DEADLINE_MS,
        );
      });
      try {
        return await Promise.race([exit, deadline]);
      } finally {
        clearTimeout(timer);
      }
    },
  };
}

async function stopped(run: Run): Promise<void> {
  if (run.child.exitCode !== null || run.child.signalCode !== null) return;
  run.child.kill('SIGTERM');
  await run.exited();
}

function controlPlane(home: string, ...extra: string[]): Run {
  return lockstep(home, [
    'control-plane',
    '--trust-domain',
    'shop.test',
    '--port',
    '0',
    '--policy-dir',
    POLICIES,
    ...extra,
  ]);
}

/** Field 22 of /proc/<pid>/stat: when the process started, in clock ticks since boot. */
function startTicks(pid: number): string {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  return stat.slice(stat.lastIndexOf(')') + 2).split(' ')[19] ?? '';
}

function writeLock(home: string, holder: { pid: number; startedAt: string | null; at?: string }): void {
  writeFileSync(join(home, 'control-plane.lock'), `${JSON.stringify({ at: new Date().toISOString(), ...holder })}\n`, {
    mode: 0o600,
  });
}

/** `main` in this process, with the state directory given by `env` only. */
async function inProcess(
  env: Record<string, string | undefined>,
  ...argv: string[]
): Promise<{ code: number; out: string[]; err: string[] }> {
  const previous = { LOCKSTEP_HOME: process.env.LOCKSTEP_HOME, LOCKSTEP_DATA_DIR: process.env.LOCKSTEP_DATA_DIR };
  for (const [name, value] of Object.entries({ LOCKSTEP_HOME: undefined, LOCKSTEP_DATA_DIR: undefined, ...env })) {
    if (value === undefined) delete process.env[name];
    else process.env[name] = value;
  }
  const out: string[] = [];
  const err: string[] = [];
  try {
    return {
      code: await main(
        argv,
        (line) => out.push(line),
        (line) => err.push(line),
      ),
      out,
      err,
    };
  } finally {
    for (const [name, value] of Object.entries(previous)) {
      if (value === undefined) delete process.env[name];
      else process.env[name] = value;
    }
  }
}

function listenOn(port: number): Promise<Server> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(port, '127.0.0.1', () => resolve(server));
  });
}

describe('lockstep control-plane: a start that cannot be', () => {
  it('exits when its port is in use, naming the port and how to choose another', async () => {
    const taken = await listenOn(0);
    const { port } = taken.address() as { port: number };
    try {
      const run = lockstep(freshHome(), [
        'control-plane',
        '--trust-domain',
        'shop.test',
        '--port',
        String(port),
        '--policy-dir',
        POLICIES,
      ]);
      const { code, ms } = await run.exited();
      console.log(`exited ${(ms / 1000).toFixed(1)} s after it was started`);
      assert.equal(code, 1, run.output());
      assert.match(
        run.output(),
        new RegExp(`lockstep: port ${port} on 127\\.0\\.0\\.1 is in use .*--port .*LOCKSTEP_PORT_BASE`),
      );
      assert.doesNotMatch(run.output(), /\n\s+at /, 'no stack trace: the message is the answer');
    } finally {
      taken.close();
    }
  });

  for (const [file, corrupt] of [
    ['keys/policy-signing.key.pem', 'not a key\n'],
    ['keys/idp-cookie.secret', 'short\n'],
    ['keys/root.pem', '-----BEGIN CERTIFICATE-----\ngarbage\n-----END CERTIFICATE-----\n'],
    ['keys/txn-token-keys.json', '{"version": 1, "keys": '],
  ] as const) {
    it(`exits when ${file} is corrupt, naming the file and what to do`, async () => {
      const home = freshHome();
      const init = lockstep(home, ['init', '--trust-domain', 'shop.test']);
      assert.equal((await init.exited()).code, 0, init.output());
      writeFileSync(join(home, file), corrupt, { mode: 0o600 });
      const run = controlPlane(home);
      assert.equal((await run.exited()).code, 1, run.output());
      assert.match(
        run.output(),
        new RegExp(
          `lockstep: key file ${join(home, file).replaceAll('.', '\\.')} is unusable: .*Fix: restore it from a backup`,
        ),
      );
      assert.doesNotMatch(run.output(), /\n\s+at /);
      assert.equal(existsSync(join(home, 'control-plane.lock')), false, 'the lock is released');
    });
  }

  it('exits when the store is not a database, naming it', async () => {
    const home = freshHome();
    writeFileSync(join(home, 'control-plane.db'), 'this is not SQLite'.repeat(100), { mode: 0o600 });
    const run = controlPlane(home);
    assert.equal((await run.exited()).code, 1, run.output());
    assert.match(
      run.output(),
      new RegExp(
        `lockstep: the store ${join(home, 'control-plane.db').replaceAll('.', '\\.')} cannot be opened .*Fix: restore it from a backup`,
      ),
    );
  });

  it("refuses a second control plane on the same state directory with the first one's pid, and leaves the first untouched", async () => {
    const home = freshHome();
    const first = controlPlane(home);
    try {
      await first.saw('listening on');
      const runtime = readFileSync(join(home, 'control-plane.json'), 'utf8');
      const adminCert = readFileSync(join(home, 'admin', 'admin.pem'), 'utf8');
      const second = controlPlane(home);
      assert.equal((await second.exited()).code, 1, second.output());
      const url = (JSON.parse(runtime) as { url: string }).url;
      assert.match(
        second.output(),
        new RegExp(
          `the state directory ${home.replaceAll('.', '\\.')} is in use by a running control plane \\(pid ${first.child.pid} at ${url.replaceAll('.', '\\.')}\\): stop it first`,
        ),
      );
      assert.equal(
        readFileSync(join(home, 'control-plane.json'), 'utf8'),
        runtime,
        "control-plane.json is the first one's",
      );
      assert.equal(
        readFileSync(join(home, 'admin', 'admin.pem'), 'utf8'),
        adminCert,
        "and so are the administrator's credentials",
      );
      const services = await inProcess({ LOCKSTEP_HOME: home }, 'services');
      assert.deepEqual([services.code, services.out], [0, ['no guard has registered yet']], services.err.join('\n'));
    } finally {
      await stopped(first);
    }
    assert.equal(existsSync(join(home, 'control-plane.lock')), false, 'a clean stop releases the lock');
  });

  it('takes over a lock left by a control plane that died, and says so', async () => {
    const home = freshHome();
    const dead = spawn(process.execPath, ['-e', '']);
    const pid = await new Promise<number>((resolve) => dead.once('exit', () => resolve(dead.pid ?? 0)));
    writeFileSync(
      join(home, 'control-plane.lock'),
      `${JSON.stringify({ pid, startedAt: null, at: new Date().toISOString() })}\n`,
      { mode: 0o600 },
    );
    const run = controlPlane(home);
    try {
      await run.saw('listening on');
      assert.match(
        run.output(),
        new RegExp(
          `WARNING took over .*control-plane\\.lock: the control plane that held it \\(pid ${pid}\\) is not running any more`,
        ),
      );
      assert.equal(
        (JSON.parse(readFileSync(join(home, 'control-plane.lock'), 'utf8')) as { pid: number }).pid,
        run.child.pid,
      );
    } finally {
      await stopped(run);
    }
  });

  it('takes over a lock that names its own pid from an earlier start (a container restarted, its state on a volume)', (t) => {
    if (!existsSync(`/proc/${process.pid}/stat`))
      t.diagnostic('no /proc here: only the time the lock was written tells');
    const cases = [
      // The earlier incarnation's start time, which /proc tells apart from this process's.
      { pid: process.pid, startedAt: '1', at: '2020-01-01T00:00:00.000Z' },
      // Written by a control plane that did not know its start time (no /proc), before this process started.
      { pid: process.pid, startedAt: null, at: '2020-01-01T00:00:00.000Z' },
    ];
    for (const holder of cases) {
      const state = localState(freshHome());
      writeLock(state.home, holder);
      const warnings: string[] = [];
      const lock = lockStateDirectory(state, (text) => warnings.push(text));
      try {
        assert.deepEqual(warnings, [
          `took over ${state.lockFile}: the control plane that held it (pid ${process.pid}) is not running any more (it did not stop cleanly)`,
        ]);
        const taken = JSON.parse(readFileSync(state.lockFile, 'utf8')) as { pid: number; at: string };
        assert.equal(taken.pid, process.pid);
        assert.notEqual(taken.at, holder.at, "the lock is this start's");
        // The lock this process holds now is not taken over, not even by itself.
        assert.throws(
          () => lockStateDirectory(state, () => {}),
          new RegExp(`in use by a running control plane \\(pid ${process.pid}\\)`),
        );
      } finally {
        lock.release();
      }
      assert.equal(existsSync(state.lockFile), false);
    }
  });

  it("takes over a lock whose pid now belongs to another user's process that started at another time", async (t) => {
    if (!existsSync('/proc/1/stat')) return t.skip("no /proc: the start time of another user's process cannot be read");
    // Pid 1 is root's; as root the control plane runs as nobody, so that signalling pid 1 is EPERM as for any user.
    const asRoot = process.getuid?.() === 0;
    // As nobody, Node must be able to read this checkout (not so in a clone under a 0700 temporary directory).
    const readable =
      !asRoot ||
      spawnSync(
        process.execPath,
        ['-e', `require('node:fs').readFileSync(${JSON.stringify(fileURLToPath(import.meta.url))})`],
        { uid: 65_534, gid: 65_534 },
      ).status === 0;
    if (!readable) return t.skip('the user nobody cannot read this checkout: run it from a directory others may read');
    const home = asRoot ? mkdtempSync(join(tmpdir(), 'lockstep-other-user-')) : freshHome();
    if (asRoot) chownSync(home, 65_534, 65_534);
    try {
      writeLock(home, { pid: 1, startedAt: String(Number(startTicks(1)) + 1) });
      if (asRoot) chownSync(join(home, 'control-plane.lock'), 65_534, 65_534);
      const run = lockstep(
        home,
        ['control-plane', '--trust-domain', 'shop.test', '--port', '0', '--policy-dir', POLICIES],
        {},
        asRoot ? { uid: 65_534, gid: 65_534 } : {},
      );
      try {
        await run.saw('listening on');
        assert.match(
          run.output(),
          /WARNING took over .*control-plane\.lock: the control plane that held it \(pid 1\) is not running any more/,
        );
        assert.doesNotMatch(run.output(), /kill 1\b/);
      } finally {
        await stopped(run);
      }
    } finally {
      if (asRoot) rmSync(home, { recursive: true, force: true });
    }
  });

  it('refuses a state directory, or a lock, that other users may write to, naming the chmod that fixes it', async () => {
    const home = freshHome();
    chmodSync(home, 0o777);
    const open = controlPlane(home);
    assert.equal((await open.exited()).code, 1, open.output());
    assert.match(
      open.output(),
      new RegExp(
        `lockstep: the state directory ${home.replaceAll('.', '\\.')} has mode 777: other users may write to it, .*Fix: chmod 700 "${home.replaceAll('.', '\\.')}"`,
      ),
    );
    assert.equal(existsSync(join(home, 'control-plane.lock')), false, 'no lock taken, no key made');
    assert.equal(existsSync(join(home, 'keys')), false);

    chmodSync(home, 0o700);
    writeLock(home, { pid: 999_999_999, startedAt: null });
    chmodSync(join(home, 'control-plane.lock'), 0o666);
    const lockOpen = controlPlane(home);
    assert.equal((await lockOpen.exited()).code, 1, lockOpen.output());
    assert.match(lockOpen.output(), /control-plane\.lock has mode 666: other users may write to it\. Fix: chmod 600 /);
  });

  it('policy status exits 1 while no valid policy is in force, naming the refused file and line', async () => {
    const home = freshHome();
    const policies = join(home, 'policies');
    cpSync(POLICIES, policies, { recursive: true });
    writeFileSync(
      join(policies, 'broken.cedar'),
      '@id("broken")\npermit (principal, action, resource)\n  when { context.nope };\n',
    );
    const run = lockstep(home, [
      'control-plane',
      '--trust-domain',
      'shop.test',
      '--port',
      '0',
      '--policy-dir',
      policies,
    ]);
    try {
      await run.saw('listening on');
      assert.match(
        run.output(),
        /WARNING the policy directory .* holds no valid policy set yet \(REFUSED: .*broken\.cedar:\d+/,
      );
      const status = await inProcess({ LOCKSTEP_HOME: home }, 'policy', 'status');
      assert.equal(status.code, 1, status.out.join('\n'));
      assert.equal(status.out[0], 'policy in force: none (no valid policy set)');
      assert.match(status.out[1] ?? '', /^latest change REFUSED at \S+: .*broken\.cedar:\d+: /);
    } finally {
      await stopped(run);
    }
  });
});

describe('lockstep: one state variable, help and version', () => {
  it('reads LOCKSTEP_DATA_DIR as another name of LOCKSTEP_HOME, and refuses the two naming different directories', async () => {
    const home = freshHome();
    const byAlias = await inProcess({ LOCKSTEP_DATA_DIR: home }, 'init', '--trust-domain', 'alias.test');
    assert.equal(byAlias.code, 0, byAlias.err.join('\n'));
    assert.equal(readFileSync(join(home, 'trust-domain'), 'utf8'), 'alias.test\n');
    const both = await inProcess({ LOCKSTEP_HOME: home, LOCKSTEP_DATA_DIR: `${home}/` }, 'init');
    assert.equal(both.code, 0, 'the same directory under both names is fine');
    const other = join(scratch, 'elsewhere');
    const conflict = await inProcess({ LOCKSTEP_HOME: home, LOCKSTEP_DATA_DIR: other }, 'services');
    assert.equal(conflict.code, 2);
    assert.deepEqual(conflict.err, [
      `lockstep: LOCKSTEP_HOME=${home} and LOCKSTEP_DATA_DIR=${other} name two different state directories: set only LOCKSTEP_HOME (LOCKSTEP_DATA_DIR is another name for it)`,
    ]);
    assert.equal(existsSync(other), false, 'nothing was created');
  });

  it("prints one command's usage for `<command> --help` and `help <command>`, and its version", async () => {
    for (const argv of [
      ['revoke', '--help'],
      ['help', 'revoke'],
      ['revoke', '-h'],
    ]) {
      const help = await inProcess({}, ...argv);
      assert.equal(help.code, 0, argv.join(' '));
      assert.match(
        help.out.join('\n'),
        /^usage:\n {2}lockstep revoke <sub\|txn\|spiffeId\|kid> <value> --reason <why>\n {2}lockstep revoke --lift /,
      );
      assert.match(help.out.join('\n'), /LOCKSTEP_HOME \(LOCKSTEP_DATA_DIR is another name for it\)/);
    }
    const status = await inProcess({}, 'policy', 'status', '--help');
    assert.match(status.out.join('\n'), /exit 1 no valid policy in force, 3 a guard enforces another version/);
    const scan = await inProcess({}, 'scan', '--help');
    assert.equal(scan.code, 0);
    assert.match(scan.out.join('\n'), /^usage:\n {2}lockstep scan \[--manifest <file>\]/);
    const all = await inProcess({}, 'help');
    assert.equal(all.code, 0);
    assert.match(all.out.join('\n'), /lockstep <command> --help \| lockstep help <command>/);
    const unknown = await inProcess({}, 'help', 'frobnicate');
    assert.equal(unknown.code, 2);
    assert.match(unknown.err.join('\n'), /no command "frobnicate"/);
    const version = await inProcess({}, '--version');
    const { version: expected } = JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8')) as {
      version: string;
    };
    assert.deepEqual([version.code, version.out], [0, [`lockstep ${expected}`]]);
  });
});
