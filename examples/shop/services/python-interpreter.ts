/**
 * The Python the shipping service runs on: `python3` on PATH, or the interpreter LOCKSTEP_PYTHON names.
 * It must be Python 3.9 or later; the service uses the standard library only, so nothing is installed.
 * `npm start` asks before it starts anything, so that a missing Python is one line naming the fix, not
 * a service that dies at start-up.
 *
 *   const python = requirePython();   // { command: 'python3', version: '3.12.3' }, or throws what to do
 */
import { spawnSync } from 'node:child_process';

export const MIN_PYTHON: readonly [number, number] = [3, 9];

export interface PythonInterpreter {
  readonly command: string;
  readonly version: string;
}

export function requirePython(env: NodeJS.ProcessEnv = process.env): PythonInterpreter {
  const named = env.LOCKSTEP_PYTHON;
  const command = named === undefined || named === '' ? 'python3' : named;
  const source = command === named ? `LOCKSTEP_PYTHON (${command})` : '`python3` on PATH';
  const fix =
    `install Python ${MIN_PYTHON.join('.')} or later (e.g. \`apt install python3\`, \`brew install python\`), ` +
    'or set LOCKSTEP_PYTHON to the path of a Python 3 interpreter';
  const probe = spawnSync(command, ['-c', 'import sys; print("%d.%d.%d" % sys.version_info[:3])'], {
    encoding: 'utf8',
    timeout: 10_000,
  });
  if (probe.error !== undefined) {
    const reason = (probe.error as NodeJS.ErrnoException).code === 'ENOENT' ? 'was not found' : probe.error.message;
    throw new Error(`the shop's shipping service runs on Python, and ${source} ${reason}: ${fix}`);
  }
  const version = probe.stdout.trim();
  const [major = 0, minor = 0] = version.split('.').map(Number);
  if (probe.status !== 0 || major !== MIN_PYTHON[0] || minor < MIN_PYTHON[1]) {
    const got = probe.status === 0 ? `is Python ${version}` : `did not run (${probe.stderr.trim().slice(0, 200)})`;
    throw new Error(
      `the shop's shipping service runs on Python ${MIN_PYTHON.join('.')} or later, and ${source} ${got}: ${fix}`,
    );
  }
  return { command, version };
}
