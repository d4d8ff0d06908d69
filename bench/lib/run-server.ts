/**
 * Starts a server under test in a child process (bench/server.ts) and returns a handle to close it.
 * Bounded: a child that does not answer in time is killed.
 */
import { fork, type ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import type { ServerWorld, Variant } from './servers.ts';

/** The server process's memory when sampled (process.memoryUsage(), and the peak RSS so far). */
export interface ServerMemory {
  readonly rssBytes: number;
  readonly heapUsedBytes: number;
  readonly externalBytes: number;
  readonly arrayBuffersBytes: number;
  readonly maxRssBytes: number;
}

/** The server process's CPU so far (all its threads, and the main thread's busy time) and its memory now. */
export interface CpuSample {
  /** The server's own clock (performance.now()), for CPU per wall second. */
  readonly atMs: number;
  readonly cpuMicros: number;
  readonly mainActiveMicros: number;
  readonly requests: number;
  readonly memory: ServerMemory;
}

export interface ServerProcess {
  readonly origin: string;
  cpu(): Promise<CpuSample>;
  /** Decision events the guard wrote to its audit file (guarded only; null otherwise). Read after close(). */
  auditLines(): number | null;
  close(): Promise<void>;
}

const SERVER_SCRIPT = fileURLToPath(new URL('../server.ts', import.meta.url));
const TIMEOUT_MS = 60_000;

function next(child: ChildProcess, expected: string): Promise<Record<string, unknown>> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`server process did not answer "${expected}" within ${TIMEOUT_MS / 1000} s`));
    }, TIMEOUT_MS);
    const onMessage = (message: Record<string, unknown>) => {
      clearTimeout(timer);
      child.off('exit', onExit);
      if (message.type === expected) resolve(message);
      else reject(new Error(`server process failed: ${String(message.message)}`));
    };
    const onExit = (code: number | null) => {
      clearTimeout(timer);
      child.off('message', onMessage);
      reject(new Error(`server process exited (${code}) before "${expected}"`));
    };
    child.once('message', onMessage);
    child.once('exit', onExit);
  });
}

export async function startServerProcess(
  variant: Variant,
  world: ServerWorld,
  auditFile: string,
): Promise<ServerProcess> {
  // execArgv [] so that a profiled bench does not profile its servers; PROFILE_SERVER=1 does.
  const execArgv = process.env.PROFILE_SERVER ? ['--cpu-prof', '--cpu-prof-dir=bench-profiles'] : [];
  const child = fork(SERVER_SCRIPT, [], {
    execPath: process.execPath,
    execArgv,
    stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
  });
  const listening = next(child, 'listening');
  child.send({ type: 'start', variant, world, auditFile });
  const { origin } = await listening;
  let auditLines: number | null = null;
  let closing: Promise<void> | null = null;
  return {
    origin: String(origin),
    auditLines: () => auditLines,
    async cpu() {
      const answer = next(child, 'cpu');
      child.send({ type: 'cpu' });
      const { atMs, cpuMicros, mainActiveMicros, requests, memory } = await answer;
      return {
        atMs: Number(atMs),
        cpuMicros: Number(cpuMicros),
        mainActiveMicros: Number(mainActiveMicros),
        requests: Number(requests),
        memory: memory as ServerMemory,
      };
    },
    /** Idempotent: a second call waits for the first. */
    close() {
      closing ??= (async () => {
        if (!child.connected) return;
        const closed = next(child, 'closed');
        child.send({ type: 'close' });
        const answer = await closed;
        auditLines = typeof answer.auditLines === 'number' ? answer.auditLines : null;
      })();
      return closing;
    },
  };
}
