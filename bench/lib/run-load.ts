/**
 * Runs one LoadJob in a fresh child process (bench/load.ts) and resolves with its LoadReport.
 * Bounded: the child is killed if it has not reported well after its longest warm-up + window.
 */
import { fork } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import type { LoadJob, LoadMessage, LoadReport } from './protocol.ts';

const LOAD_SCRIPT = fileURLToPath(new URL('../load.ts', import.meta.url));

/** `onMark` is called when the measured window starts and ends (for server-side CPU sampling). */
export function runLoad(job: LoadJob, onMark: (phase: 'start' | 'end') => void = () => {}): Promise<LoadReport> {
  return new Promise((resolve, reject) => {
    // execArgv [] so that a profiled bench (--cpu-prof) does not also profile its load generator.
    const child = fork(LOAD_SCRIPT, [], {
      execPath: process.execPath,
      execArgv: [],
      stdio: ['ignore', 'ignore', 'inherit', 'ipc'],
    });
    let settled = false;
    const finish = (error: Error | null, report?: LoadReport) => {
      if (settled) return;
      settled = true;
      clearTimeout(deadline);
      if (error) reject(error);
      else resolve(report as LoadReport);
    };
    const deadline = setTimeout(
      () => {
        child.kill('SIGKILL');
        finish(new Error(`load generator did not report within ${(job.maxWarmupMs + job.measureMs) / 1000 + 30} s`));
      },
      job.maxWarmupMs + job.measureMs + 30_000,
    );
    child.on('message', (message: LoadMessage) => {
      if (message.type === 'mark') onMark(message.phase);
      else if (message.type === 'report') finish(null, message.report);
      else finish(new Error(`load generator failed: ${message.message}`));
    });
    child.on('error', (error) => finish(error));
    child.on('exit', (code, signal) => finish(new Error(`load generator exited (${signal ?? code}) without a report`)));
    child.send(job);
  });
}
