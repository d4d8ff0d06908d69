/**
 * What the tests of the commands that join a control plane (`lockstep sidecar`, `lockstep authz-server`)
 * share: a real control plane in a scratch directory, a config file for `orders`, and the command run as an
 * operator runs it — in a child process until SIGTERM, or in process through `main` with the environment
 * it needs.
 *
 *   const world = controlPlaneForCommands('lockstep-sidecar-cli-'); // registers before/after on the file
 *   const config = world.writeConfig('sidecar.yaml', 'upstream: http://127.0.0.1:9\n');
 *   const child = await startCommand(['sidecar', '--config', config], await world.joinToken('orders'), 'egress on');
 *   assert.equal(await child.stop(), 0, child.output());
 */
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, before } from 'node:test';
import { createJoinToken } from '@lockstep/control-plane';
import { assembleControlPlane, type AssembledControlPlane } from '@lockstep/monitor';
import { main } from '../src/main.ts';

const BIN = fileURLToPath(new URL('../bin/lockstep.js', import.meta.url));

export interface CommandWorld {
  readonly scratch: string;
  /** The running control plane (trust domain shop.test); there from the file's `before` on. */
  readonly controlPlane: AssembledControlPlane;
  /**
   * Writes `name` in the scratch directory: service orders joined to the control plane, listening on any port,
   * state under scratch/orders, one route (GET /orders/:id), with `fields` (the command's own) and `extra`.
   */
  writeConfig(name: string, fields: string, extra?: string): string;
  /** A fresh join token for `service`, as `lockstep join-token create` would give. */
  joinToken(service: string): Promise<string>;
}

/** Starts a control plane before the calling test file's tests and closes it, and its scratch directory, after. */
export function controlPlaneForCommands(scratchPrefix: string): CommandWorld {
  const scratch = mkdtempSync(join(tmpdir(), scratchPrefix));
  let controlPlane: AssembledControlPlane | undefined;
  const running = (): AssembledControlPlane => {
    if (controlPlane === undefined)
      throw new Error('the control plane starts in the test file’s before(): use it from inside a test');
    return controlPlane;
  };

  before(async () => {
    controlPlane = await assembleControlPlane({
      trustDomain: 'shop.test',
      keyDir: join(scratch, 'keys'),
      store: { sqlite: join(scratch, 'store.db') },
      checkpointIntervalMs: 3_600_000,
      detection: { sweepMs: 3_600_000 },
      output: { warning: () => {} },
    });
  });

  after(async () => {
    await controlPlane?.close();
    rmSync(scratch, { recursive: true, force: true });
  });

  return {
    scratch,
    get controlPlane() {
      return running();
    },
    writeConfig(name, fields, extra = '') {
      const file = join(scratch, name);
      writeFileSync(
        file,
        `service: orders\ncontrolPlane: ${running().url}\ntrustDomain: shop.test\nlisten: { port: 0 }\n` +
          `${fields}stateDir: ${join(scratch, 'orders')}\n` +
          `routes:\n  GET /orders/:id: { action: orders:read }\n${extra}`,
      );
      return file;
    },
    async joinToken(service) {
      const { store, ca } = running();
      return (await createJoinToken(store, ca, { service, createdBy: 'cli' })).token;
    },
  };
}

export interface RunningCommand {
  /** Everything the command wrote so far, stdout and stderr interleaved. */
  output(): string;
  /** Sends SIGTERM and resolves with the exit code. */
  stop(): Promise<number | null>;
}

/**
 * `lockstep <argv>` in a child process with LOCKSTEP_JOIN_TOKEN=`joinToken`; resolves once its output includes
 * `ready`, or after 15 s without it (the caller's assertions on the output then say what was missing).
 */
export async function startCommand(argv: readonly string[], joinToken: string, ready: string): Promise<RunningCommand> {
  const child = spawn(process.execPath, [BIN, ...argv], {
    env: { ...process.env, LOCKSTEP_JOIN_TOKEN: joinToken },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let output = '';
  child.stdout.on('data', (chunk: Buffer) => (output += chunk.toString()));
  child.stderr.on('data', (chunk: Buffer) => (output += chunk.toString()));
  const exited = new Promise<number | null>((resolve) => child.once('exit', resolve));
  for (let i = 0; i < 300 && !output.includes(ready); i++) await new Promise((r) => setTimeout(r, 50));
  return {
    output: () => output,
    stop: () => {
      child.kill('SIGTERM');
      return exited;
    },
  };
}

/**
 * `main(argv)` in process with the environment variables in `env` set (unset where undefined), each put back
 * as it was after; resolves with the exit code and the lines written to stdout and stderr.
 *
 *   await runMain(['sidecar', '--config', file], { LOCKSTEP_JOIN_TOKEN: undefined }); // code 2: not set
 */
export async function runMain(
  argv: readonly string[],
  env: Readonly<Record<string, string | undefined>>,
): Promise<{ code: number; out: string[]; err: string[] }> {
  const out: string[] = [];
  const err: string[] = [];
  const previous = Object.entries(env).map(([name]) => [name, process.env[name]] as const);
  const assign = (name: string, value: string | undefined) => {
    if (value === undefined) delete process.env[name];
    else process.env[name] = value;
  };
  try {
    for (const [name, value] of Object.entries(env)) assign(name, value);
    const code = await main(
      argv,
      (line) => out.push(line),
      (line) => err.push(line),
    );
    return { code, out, err };
  } finally {
    for (const [name, value] of previous) assign(name, value);
  }
}
