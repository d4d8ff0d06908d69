/**
 * CPU time and resident memory of server processes, read from /proc (Linux) by the bench, not by the
 * processes themselves, so that a process that is not Node (nginx) is measured the same way:
 *
 *   const before = processCpuMicros([pid]);   // utime + stime of /proc/<pid>/stat, all threads
 *   …
 *   const usedMicros = processCpuMicros([pid]) - before;
 *   const rss = residentBytes([pid]);          // VmRSS of /proc/<pid>/status, summed
 *
 * utime and stime count clock ticks (`getconf CLK_TCK`, 100 on Linux: 10 ms each), so a window must
 * last long enough for that resolution not to matter: the bench's measured windows last seconds.
 */
import { execFileSync } from 'node:child_process';
import { existsSync, readdirSync, readFileSync } from 'node:fs';

/** Clock ticks per second of /proc/<pid>/stat; 100 unless `getconf` says otherwise. */
const TICKS_PER_SECOND = (() => {
  try {
    const ticks = Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim());
    return Number.isInteger(ticks) && ticks > 0 ? ticks : 100;
  } catch {
    return 100;
  }
})();

export function procAvailable(): boolean {
  return existsSync(`/proc/${process.pid}/stat`);
}

/** The fields of /proc/<pid>/stat after the command name (which may itself hold spaces and parentheses). */
function statFields(pid: number): string[] | null {
  let text: string;
  try {
    text = readFileSync(`/proc/${pid}/stat`, 'utf8');
  } catch {
    return null; // gone
  }
  return text.slice(text.lastIndexOf(')') + 2).split(' ');
}

/** utime + stime of every listed process that still runs, in µs. */
export function processCpuMicros(pids: readonly number[]): number {
  let ticks = 0;
  for (const pid of pids) {
    const fields = statFields(pid);
    // Fields 14 and 15 of stat(5); the array starts at field 3 (state).
    if (fields !== null) ticks += Number(fields[11]) + Number(fields[12]);
  }
  return (ticks * 1e6) / TICKS_PER_SECOND;
}

/** VmRSS of every listed process that still runs, in bytes (shared pages counted once per process). */
export function residentBytes(pids: readonly number[]): number {
  let bytes = 0;
  for (const pid of pids) {
    try {
      const kib = /^VmRSS:\s+(\d+) kB/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1];
      if (kib !== undefined) bytes += Number(kib) * 1024;
    } catch {
      // gone
    }
  }
  return bytes;
}

/** The processes whose parent is `pid` (nginx's workers under its master). */
export function childPids(pid: number): number[] {
  const children: number[] = [];
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    const fields = statFields(Number(entry));
    // Field 4 of stat(5): the parent's pid.
    if (fields !== null && Number(fields[1]) === pid) children.push(Number(entry));
  }
  return children;
}
