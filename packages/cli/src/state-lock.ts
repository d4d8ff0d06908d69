/**
 * One control plane per state directory. `control-plane.lock` (0600) names the process that holds
 * it; it is created exclusively before the keys or the store are opened, so a second start on the
 * same directory is refused with the first one's pid and changes nothing (not `control-plane.json`,
 * not the administrator's credentials). A lock whose process is gone — killed with -9, a power loss,
 * a container restarted — is taken over, and the start says so: a crash never blocks the next start.
 *
 * "Gone" is checked by pid and, where /proc exists, by the process's start time, so that a pid reused
 * after a reboot — by another user's program, or by this very process when a container restarts with
 * its state on a volume — does not pass for the old control plane.
 *
 * The lock is only as good as the directory: one that others may write to is refused (chmod 700), since
 * anyone who can replace the lock can also replace the keys and the store beside it.
 *
 * Replicas (`--replica <name>`) each lock `control-plane.<name>.lock`: several run on one directory, one
 * per name. A control plane without --replica and replicas never share a directory: each refuses to
 * start while the other kind runs there (checked once its own lock is held, so that of two starting at
 * once at least one sees the other).
 */
import {
  existsSync,
  linkSync,
  readdirSync,
  readFileSync,
  renameSync,
  statSync,
  unlinkSync,
  writeFileSync,
} from 'node:fs';
import { localState, OperatorError, REPLICA_NAME, type LocalState } from './state.ts';

export interface StateLock {
  /** Removes the lock if it is still this process's. */
  release(): void;
}

interface Holder {
  readonly pid: number;
  /** The process's start time in clock ticks since boot (/proc/<pid>/stat), null where unknown. */
  readonly startedAt: string | null;
  /** When the lock was written (ms since the epoch), null where unreadable. */
  readonly at: number | null;
}

/** When this process started, for a lock naming its pid where no start time can be compared. */
const thisProcessStartedAt = Date.now() - process.uptime() * 1000;

export function lockStateDirectory(state: LocalState, warn: (text: string) => void): StateLock {
  refuseSharedDirectory(state);
  const mine = JSON.stringify({ pid: process.pid, startedAt: processStart(process.pid), at: new Date().toISOString() });
  // Three rounds at most: a stale lock moved aside, then a race with another starter lost or won.
  for (let round = 0; round < 3; round += 1) {
    try {
      writeFileSync(state.lockFile, `${mine}\n`, { flag: 'wx', mode: 0o600 });
      return aloneOfItsKind(state, held(state.lockFile, mine));
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'EEXIST') throw error;
    }
    refuseSharedFile(state.lockFile);
    const found = readText(state.lockFile);
    if (found === null) continue;
    const holder = parseHolder(found);
    if (holder !== null && isRunning(holder)) throw inUse(state, holder.pid);
    if (takeOver(state.lockFile, found)) {
      const who = holder === null ? 'unreadable' : `pid ${holder.pid}`;
      warn(
        `took over ${state.lockFile}: the control plane that held it (${who}) is not running any more ` +
          '(it did not stop cleanly)',
      );
    }
  }
  throw new OperatorError(
    `could not take ${state.lockFile}: another control plane is starting on ${state.home} ` + 'at the same time',
  );
}

/**
 * Refuses (the same OperatorError as a second start) when a running control plane holds `state`'s
 * lock, or any other lock of its directory (a replica's, or the lone control plane's): for a launcher
 * that must not touch a directory in use before it starts one.
 */
export function checkStateDirectoryFree(state: LocalState): void {
  for (const other of [state, ...otherLocks(state)]) {
    const pid = runningHolder(other);
    if (pid !== null) throw inUse(other, pid, state);
  }
}

/**
 * `lock`, once no control plane of the other kind runs on the directory (replicas beside a lone control
 * plane, or the reverse); else the lock is released and the start refused.
 */
function aloneOfItsKind(state: LocalState, lock: StateLock): StateLock {
  for (const other of otherLocks(state)) {
    if ((other.replica === null) === (state.replica === null)) continue;
    const pid = runningHolder(other);
    if (pid === null) continue;
    lock.release();
    throw new OperatorError(
      `the state directory ${state.home} is in use by ${describe(other, pid)}: a control plane without --replica and ` +
        'replicas cannot share one. Stop it first, ' +
        (state.replica === null
          ? `or start this one as another replica (--replica <name>, with --postgres)`
          : 'or give this replica another LOCKSTEP_HOME'),
    );
  }
  return lock;
}

/** Every other lock file of `state`'s directory: the lone control plane's and each replica's. */
function otherLocks(state: LocalState): LocalState[] {
  if (!existsSync(state.home)) return [];
  const names = readdirSync(state.home)
    .map((file) => /^control-plane\.(.+)\.lock$/.exec(file)?.[1])
    .filter((name): name is string => name !== undefined && REPLICA_NAME.test(name));
  return [localState(state.home), ...names.map((name) => localState(state.home, name))].filter(
    (other) => other.lockFile !== state.lockFile,
  );
}

/** The pid of the running control plane that holds `state`'s lock, or null. */
function runningHolder(state: LocalState): number | null {
  const found = readText(state.lockFile);
  const holder = found === null ? null : parseHolder(found);
  return holder !== null && isRunning(holder) ? holder.pid : null;
}

function held(file: string, mine: string): StateLock {
  let released = false;
  const release = () => {
    if (released) return;
    released = true;
    process.off('exit', release);
    if (readText(file)?.trim() === mine) unlinkSync(file);
  };
  // Also when the process exits without a clean stop (an uncaught error): only a kill leaves it behind.
  process.on('exit', release);
  return { release };
}

/**
 * Moves the stale lock aside and removes it, only if it is still the one read: of two processes
 * taking over together, the second finds the first one's fresh lock and puts it back.
 */
function takeOver(file: string, stale: string): boolean {
  const aside = `${file}.${process.pid}.stale`;
  try {
    renameSync(file, aside);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return false;
    throw error;
  }
  const moved = readText(aside);
  if (moved !== stale) {
    try {
      linkSync(aside, file);
    } catch {
      // A third process holds it now: that one stays.
    }
    unlinkSync(aside);
    return false;
  }
  unlinkSync(aside);
  return true;
}

/** `holder` (a lock's files) runs as `pid`; `starting`: the files of the control plane that would start. */
function inUse(holder: LocalState, pid: number, starting: LocalState = holder): OperatorError {
  return new OperatorError(
    `the state directory ${holder.home} is in use by ${describe(holder, pid)}: ` +
      `stop it first (Ctrl-C where it runs, or kill ${pid}), or start this one with another ` +
      (starting.replica === null ? 'LOCKSTEP_HOME' : '--replica name'),
  );
}

/** "a running control plane (pid 42 at https://…)", or "replica r0 (pid 42 at https://…)". */
function describe(state: LocalState, pid: number): string {
  let url = '';
  try {
    const runtime = JSON.parse(readFileSync(state.runtimeFile, 'utf8')) as { pid?: unknown; url?: unknown };
    if (runtime.pid === pid && typeof runtime.url === 'string') url = ` at ${runtime.url}`;
  } catch {
    // No URL to add: the pid says enough.
  }
  return `${state.replica === null ? 'a running control plane' : `replica ${state.replica}`} (pid ${pid}${url})`;
}

/**
 * Whether the lock's holder still runs. A live pid is the holder only if it started when the holder
 * did: after a reboot or a container restart the pid may be another user's program (EPERM: it runs, as
 * another user — its /proc/<pid>/stat is readable all the same) or this process itself.
 */
function isRunning(holder: Holder): boolean {
  if (holder.pid !== process.pid) {
    try {
      process.kill(holder.pid, 0);
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'EPERM') return false;
    }
  }
  const startedAt = processStart(holder.pid);
  if (holder.startedAt !== null && startedAt !== null) return startedAt === holder.startedAt;
  // No start time to compare (no /proc): another pid that runs is taken for the holder; this process's own
  // pid is the holder only if the lock was written since this process started.
  return holder.pid !== process.pid || (holder.at !== null && holder.at >= thisProcessStartedAt);
}

function parseHolder(text: string): Holder | null {
  try {
    const parsed = JSON.parse(text) as { pid?: unknown; startedAt?: unknown; at?: unknown };
    if (!Number.isSafeInteger(parsed.pid) || (parsed.pid as number) <= 0) return null;
    const at = typeof parsed.at === 'string' ? Date.parse(parsed.at) : Number.NaN;
    return {
      pid: parsed.pid as number,
      startedAt: typeof parsed.startedAt === 'string' ? parsed.startedAt : null,
      at: Number.isNaN(at) ? null : at,
    };
  } catch {
    // Half written (a crash between create and write): nobody holds it.
    return null;
  }
}

/** Group or others may write to the state directory: they could replace the lock, the keys, the store. */
function refuseSharedDirectory(state: LocalState): void {
  const mode = statSync(state.home).mode & 0o7777;
  if ((mode & 0o022) === 0) return;
  throw new OperatorError(
    `the state directory ${state.home} has mode ${octal(mode)}: other users may write to it, ` +
      'so they could replace its lock, keys and store. Only its owner may use it. ' +
      `Fix: chmod 700 ${JSON.stringify(state.home)}`,
  );
}

function refuseSharedFile(file: string): void {
  let mode;
  try {
    mode = statSync(file).mode & 0o7777;
  } catch {
    return;
  }
  if ((mode & 0o022) === 0) return;
  throw new OperatorError(
    `${file} has mode ${octal(mode)}: other users may write to it. ` + `Fix: chmod 600 ${JSON.stringify(file)}`,
  );
}

function octal(mode: number): string {
  return mode.toString(8).padStart(3, '0');
}

/** Field 22 of /proc/<pid>/stat (after the command name, which may hold spaces and parentheses). */
function processStart(pid: number): string | null {
  const stat = readText(`/proc/${pid}/stat`);
  if (stat === null) return null;
  return stat.slice(stat.lastIndexOf(')') + 2).split(' ')[19] ?? null;
}

function readText(file: string): string | null {
  if (!existsSync(file)) return null;
  try {
    return readFileSync(file, 'utf8');
  } catch {
    return null;
  }
}
