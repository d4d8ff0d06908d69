/**
 * Keeps one process of the shop running. A process that dies when nobody stopped it — `kill -9`, a
 * crash — is said so (what died, how, how long it ran, its log) and started again after a delay that
 * doubles with each quick crash (1 s, 2 s, 4 s…, at most 30 s); one that ran 30 s or more starts the
 * count afresh. After five crashes in a row, each within 30 s of starting, the supervisor gives up,
 * loudly: a restart loop only fills the log, while the cause waits for a person.
 *
 * A restart that cannot happen for a reason outside the process — a service cannot join while the
 * control plane is unreachable (`WaitingFor`) — is no crash: it is said so and tried again with the
 * same doubling, capped delay, however long that takes, and never counts towards giving up; otherwise
 * a control plane down for 15 s would leave every service that died meanwhile down for good.
 *
 * A stop on purpose (`stop()`: the drill's "downstream is down", Ctrl-C) is never followed by a restart.
 */
import type { ChildProcess } from 'node:child_process';

export interface RestartPolicy {
  /** The delay before the first restart; it doubles with each quick crash. */
  readonly firstDelayMs: number;
  readonly maxDelayMs: number;
  /** A run at least this long was not a crash loop: the count starts afresh. */
  readonly stableMs: number;
  /** Quick crashes in a row after which it stays down. */
  readonly giveUpAfter: number;
}

export const RESTART_POLICY: RestartPolicy = {
  firstDelayMs: 1_000,
  maxDelayMs: 30_000,
  stableMs: 30_000,
  giveUpAfter: 5,
};

export interface SupervisorOptions {
  /** How lines name it: `orders`, `the control plane`. */
  readonly name: string;
  /** Where its output goes (named in every line about a death). */
  readonly logFile: string;
  /**
   * Starts the process; resolves once it is ready, rejects (with the process gone) when it is not.
   * Called again for every restart: whatever a fresh start needs (a new join token) it makes.
   */
  readonly start: () => Promise<ChildProcess>;
  /** Deaths, restarts, giving up. */
  readonly say: (line: string) => void;
  /** Default RESTART_POLICY (tests shorten it). */
  readonly restartPolicy?: RestartPolicy;
  /**
   * Called once it has given up, after saying so: for a process the rest cannot do without (the
   * control plane), which stops the rest. Without it, the rest keeps running, and the line says so.
   */
  readonly onGiveUp?: () => void;
}

/**
 * What `start` throws when the process cannot start now for want of something outside it (the control
 * plane it joins through does not answer): retried, not counted as a crash.
 */
export class WaitingFor extends Error {
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = 'WaitingFor';
  }
}

export interface Supervised {
  /** The process running now; undefined while it is down. */
  readonly child: ChildProcess | undefined;
  /** Stops it on purpose, with any restart that was due: it stays down (`SIGKILL`: as a crash would). */
  stop(signal?: NodeJS.Signals): Promise<void>;
}

/** Starts the process the first time (a failure rejects: nothing to supervise), then keeps it running. */
export async function supervise(options: SupervisorOptions): Promise<Supervised> {
  const { name, logFile, say } = options;
  const { firstDelayMs, maxDelayMs, stableMs, giveUpAfter } = options.restartPolicy ?? RESTART_POLICY;
  let child: ChildProcess | undefined = await options.start();
  let readyAt = Date.now();
  let crashes = 0;
  // Restarts in a row that waited for something outside the process: they double the delay, not the count.
  let waits = 0;
  let stopped = false;
  let timer: NodeJS.Timeout | null = null;
  let restarting: Promise<void> | null = null;

  const watch = (running: ChildProcess) => {
    const died = (code: number | null, signal: NodeJS.Signals | null) => {
      if (stopped || running !== child) return;
      child = undefined;
      const ranMs = Date.now() - readyAt;
      crashes = ranMs < stableMs ? crashes + 1 : 1;
      const how = signal === null ? `exit code ${String(code)}` : `killed by ${signal}`;
      say(`${name} died (${how}) after ${seconds(ranMs)}; its log: ${logFile}`);
      restartLater();
    };
    if (running.exitCode !== null || running.signalCode !== null) died(running.exitCode, running.signalCode);
    else running.once('exit', died);
  };

  const restartLater = () => {
    if (crashes >= giveUpAfter) {
      say(
        `GAVE UP restarting ${name}: it died ${crashes} times in a row, each within ${seconds(stableMs)} ` +
          `of starting. Its log says why: ${logFile}. Fix that and run npm start again` +
          `${options.onGiveUp === undefined ? ' (the rest of the shop keeps running)' : ''}`,
      );
      options.onGiveUp?.();
      return;
    }
    const delayMs = Math.min(firstDelayMs * 2 ** (crashes - 1), maxDelayMs);
    say(`restarting ${name} in ${seconds(delayMs)} (restart ${crashes} of at most ${giveUpAfter - 1} in a row)`);
    restartIn(delayMs);
  };

  const restartIn = (delayMs: number) => {
    timer = setTimeout(() => {
      timer = null;
      restarting = restart().finally(() => {
        restarting = null;
      });
    }, delayMs);
  };

  const restart = async () => {
    let next: ChildProcess;
    try {
      next = await options.start();
    } catch (error) {
      if (stopped) return;
      if (error instanceof WaitingFor) {
        waits += 1;
        const delayMs = Math.min(firstDelayMs * 2 ** (crashes - 1 + waits), maxDelayMs);
        say(
          `${name} could not restart: ${error.message}; trying again in ${seconds(delayMs)} ` +
            '(not counted as a crash: the cause is not in it)',
        );
        restartIn(delayMs);
        return;
      }
      crashes += 1;
      say(`${name} could not restart: ${(error as Error).message}`);
      restartLater();
      return;
    }
    waits = 0;
    if (stopped) {
      await terminate(next);
      return;
    }
    child = next;
    readyAt = Date.now();
    say(`${name} restarted: ready again`);
    watch(next);
  };

  watch(child);
  return {
    get child() {
      return child;
    },
    async stop(signal: NodeJS.Signals = 'SIGTERM') {
      stopped = true;
      if (timer !== null) clearTimeout(timer);
      await restarting;
      await terminate(child, signal);
      child = undefined;
    },
  };
}

/** SIGTERM (or `signal`), then SIGKILL after 5 s; resolves once the process is gone. */
export async function terminate(child: ChildProcess | undefined, signal: NodeJS.Signals = 'SIGTERM'): Promise<void> {
  if (child === undefined || child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise<void>((resolvePromise) => child.once('exit', () => resolvePromise()));
  child.kill(signal);
  const timer = setTimeout(() => child.kill('SIGKILL'), 5_000);
  await exited;
  clearTimeout(timer);
}

function seconds(ms: number): string {
  return ms < 10_000 ? `${(ms / 1000).toFixed(1)} s` : `${Math.round(ms / 1000)} s`;
}
