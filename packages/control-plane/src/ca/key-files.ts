/**
 * Private keys at rest: PKCS#8 PEM files readable by their owner only (0600) in a directory only the
 * owner can enter (0700). A key file or directory that is wider is refused, with the command that
 * fixes it: a CA key that others can read is a CA others control.
 */
import { chmodSync, existsSync, mkdirSync, readFileSync, renameSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

export class KeyPermissionError extends Error {
  readonly code = 'LOCKSTEP_CP_KEY_PERMISSIONS';
  constructor(message: string) {
    super(message);
    this.name = 'KeyPermissionError';
  }
}

/**
 * A key file that is there but cannot be used (truncated, not PEM, not JSON, not a key). Never
 * replaced by a new key on its own: what it signed (SVIDs, tokens, checkpoints) would stop verifying.
 */
export class KeyFileError extends Error {
  readonly code = 'LOCKSTEP_CP_KEY_FILE';
  readonly file: string;
  constructor(file: string, problem: string) {
    super(
      `key file ${file} is unusable: ${problem}. Fix: restore it from a backup; a development state directory ` +
        'can start afresh instead (move the whole directory away: a new CA, every workload joins again)',
    );
    this.name = 'KeyFileError';
    this.file = file;
  }
}

/** Parses what a key file holds; whatever `parse` throws becomes a KeyFileError that names the file. */
export async function parseKeyFile<T>(dir: string, name: string, parse: () => T | Promise<T>): Promise<T> {
  try {
    return await parse();
  } catch (error) {
    if (error instanceof KeyFileError) throw error;
    throw new KeyFileError(join(dir, name), (error as Error).message);
  }
}

/** Creates `dir` (0700) if it does not exist, and refuses one that group or others can use. */
export function ensurePrivateDirectory(dir: string): void {
  if (!existsSync(dir)) mkdirSync(dir, { recursive: true, mode: 0o700 });
  const mode = statSync(dir).mode & 0o777;
  if ((mode & 0o077) !== 0) {
    throw new KeyPermissionError(
      `key directory ${dir} has mode ${mode.toString(8).padStart(3, '0')}; only its owner may use it. Fix: chmod 700 ${JSON.stringify(dir)}`,
    );
  }
}

export function readPrivateFile(dir: string, name: string): string | null {
  const path = join(dir, name);
  if (!existsSync(path)) return null;
  const mode = statSync(path).mode & 0o777;
  if ((mode & 0o077) !== 0) {
    throw new KeyPermissionError(
      `key file ${path} has mode ${mode.toString(8).padStart(3, '0')}; only its owner may read it. Fix: chmod 600 ${JSON.stringify(path)}`,
    );
  }
  return readFileSync(path, 'utf8');
}

/** Writes a new file (never replaces one) readable by its owner only. */
export function writePrivateFile(dir: string, name: string, contents: string): void {
  const path = join(dir, name);
  writeFileSync(path, contents, { mode: 0o600, flag: 'wx' });
  chmodSync(path, 0o600);
}

/** Replaces a file atomically (a temporary file, 0600, renamed over it): readers see the old or the new, never half. */
export function replacePrivateFile(dir: string, name: string, contents: string): void {
  const path = join(dir, name);
  const temporary = join(dir, `.${name}.${process.pid}.tmp`);
  writeFileSync(temporary, contents, { mode: 0o600, flag: 'w' });
  chmodSync(temporary, 0o600);
  renameSync(temporary, path);
}
