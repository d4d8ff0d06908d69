/**
 * Commands of the consumer test, run as a reader runs them: `bash -c <line>` in the project directory.
 * Every process starts in a process group of its own, so that stopping it also stops what it started
 * (`npx` → the `lockstep` bin, `bash` → `node`); background processes are stopped in reverse order of
 * their start (a service before the control plane it ships to), also when a step fails.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { setTimeout as sleep } from 'node:timers/promises';

export interface ShellContext {
  readonly cwd: string;
  readonly env: NodeJS.ProcessEnv;
}

export interface Finished {
  readonly code: number | null;
  readonly signal: NodeJS.Signals | null;
  readonly output: string;
  readonly ms: number;
}

/** A step that failed, with what it printed: the runner shows it as it is. */
export class StepFailure extends Error {
  readonly output: string;
  constructor(message: string, output: string) {
    super(message);
    this.name = 'StepFailure';
    this.output = output;
  }
}

function start(command: string, context: ShellContext): { child: ChildProcess; output: () => string } {
  const child = spawn('bash', ['-c', command], {
    cwd: context.cwd,
    env: context.env,
    detached: true,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const chunks: Buffer[] = [];
  child.stdout?.on('data', (chunk: Buffer) => chunks.push(chunk));
  child.stderr?.on('data', (chunk: Buffer) => chunks.push(chunk));
  return { child, output: () => Buffer.concat(chunks).toString('utf8') };
}

function signalGroup(child: ChildProcess, signal: NodeJS.Signals): void {
  if (child.pid === undefined) return;
  try {
    process.kill(-child.pid, signal);
  } catch {
    // The group has ended already.
  }
}

const exited = (child: ChildProcess) =>
  new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => {
    if (child.exitCode !== null || child.signalCode !== null)
      resolve({ code: child.exitCode, signal: child.signalCode });
    else child.once('close', (code, signal) => resolve({ code, signal }));
  });

/** Runs a command to its end; after `timeoutMs` its process group is killed and the result says so. */
export async function runCommand(command: string, context: ShellContext, timeoutMs: number): Promise<Finished> {
  const started = Date.now();
  const { child, output } = start(command, context);
  const timer = setTimeout(() => signalGroup(child, 'SIGKILL'), timeoutMs);
  try {
    const { code, signal } = await exited(child);
    const ms = Date.now() - started;
    return {
      code,
      signal,
      output: signal === 'SIGKILL' && ms >= timeoutMs ? `${output()}\n[killed after ${timeoutMs / 1000} s]` : output(),
      ms,
    };
  } finally {
    clearTimeout(timer);
  }
}

export interface BackgroundProcess {
  readonly command: string;
  output(): string;
}

/** The processes started in the background, stopped together at the end. */
export class Background {
  readonly #running: Array<{ readonly command: string; readonly child: ChildProcess; readonly output: () => string }> =
    [];

  /** Starts `command` and resolves once its output contains `ready`; fails if it ends or stays silent for `timeoutMs`. */
  async start(command: string, context: ShellContext, ready: string, timeoutMs: number): Promise<BackgroundProcess> {
    const entry = { command, ...start(command, context) };
    this.#running.push(entry);
    const deadline = Date.now() + timeoutMs;
    while (!entry.output().includes(ready)) {
      if (entry.child.exitCode !== null || entry.child.signalCode !== null) {
        throw new StepFailure(
          `it ended (exit ${entry.child.exitCode ?? entry.child.signalCode}) before printing "${ready}"`,
          entry.output(),
        );
      }
      if (Date.now() > deadline)
        throw new StepFailure(`it did not print "${ready}" within ${timeoutMs / 1000} s`, entry.output());
      await sleep(100);
    }
    return { command, output: entry.output };
  }

  /**
   * SIGTERM to each process group, newest first, SIGKILL after `graceMs`; resolves once all have ended,
   * with what each printed (for a failure report).
   */
  async stopAll(graceMs = 10_000): Promise<Array<{ command: string; output: string }>> {
    // Taken off the list first: a process id is never signalled again once its process has ended.
    const running = this.#running.splice(0).reverse();
    for (const { child } of running) {
      signalGroup(child, 'SIGTERM');
      const stopped = await Promise.race([
        exited(child).then(() => true),
        sleep(graceMs, undefined, { ref: false }).then(() => false),
      ]);
      if (!stopped) {
        signalGroup(child, 'SIGKILL');
        await exited(child);
      }
      // Whatever the group's leader left behind.
      signalGroup(child, 'SIGKILL');
    }
    return running.reverse().map(({ command, output }) => ({ command, output: output() }));
  }

  /** Synchronous last resort (the runner itself is being stopped): kill every group now. */
  killAll(): void {
    for (const { child } of this.#running) signalGroup(child, 'SIGKILL');
  }
}
