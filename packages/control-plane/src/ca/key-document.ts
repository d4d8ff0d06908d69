/**
 * Opening one key document of a vault (key-vault.ts): created when missing without forking an identity
 * when replicas race, and errors that name where the document is.
 */
import { join } from 'node:path';
import { KeyFileError } from './key-files.ts';
import type { KeyDocument, KeyVault } from './key-vault.ts';

/** Where `name` is, for messages: the file's path in a key directory, else the document in its vault. */
export function documentPlace(vault: KeyVault, name: string): string {
  return vault.shared ? `${name} in ${vault.where}` : join(vault.where, name);
}

/** Whatever `parse` throws becomes a KeyFileError naming `place`: a document that is there but unusable. */
export async function parseKeyDocument<T>(place: string, parse: () => T | Promise<T>): Promise<T> {
  try {
    return await parse();
  } catch (error) {
    if (error instanceof KeyFileError) throw error;
    throw new KeyFileError(place, (error as Error).message);
  }
}

/**
 * The newest generation of `name`, created with `create()` when there is none. Two replicas opening an
 * empty vault at once both create; the write of the one that comes second fails (compare-and-set on
 * generation -1), and it reads and uses the first one's document: one identity, never two.
 */
export async function readOrCreate(
  vault: KeyVault,
  name: string,
  create: () => Promise<string>,
): Promise<{ readonly document: KeyDocument; readonly created: boolean }> {
  for (let attempt = 0; attempt < 3; attempt += 1) {
    const found = await vault.read(name);
    if (found !== null) return { document: found, created: false };
    const text = await create();
    if (await vault.write(name, -1, text)) return { document: { name, generation: 0, text }, created: true };
  }
  throw new Error(`the key document ${documentPlace(vault, name)} was written by someone else but cannot be read`);
}

/**
 * Runs the steps given to it one after the other: a change to a document (a rotation) and a reload of
 * what another replica wrote never interleave in one process.
 */
export function oneAtATime(): <T>(step: () => Promise<T>) => Promise<T> {
  let tail: Promise<unknown> = Promise.resolve();
  return (step) => {
    const run = tail.then(step);
    tail = run.catch(() => {});
    return run;
  };
}
