/**
 * The sealed vault's memory across restarts (sealed-key-vault.ts): the newest generation of each key
 * document a replica has seen, in a local file beside its keys (0600, replaced through a temporary file).
 * A database writer who deletes the newest generations while every replica is down (or restarting) then
 * still finds the rollback refused.
 *
 *   { "version": 1, "databases": { "<database> schema <schema>": { "<document>": <generation> } } }
 *
 * Keyed by database and schema, so that a replica pointed at another database is not compared with this
 * one. Replicas on one state directory share the file: each write takes the highest of what the file holds
 * and what the writer has seen.
 */
import { basename, dirname } from 'node:path';
import { ensurePrivateDirectory, readPrivateFile, replacePrivateFile } from './key-files.ts';

/** Its name in a control plane's key directory. */
export const VAULT_GENERATIONS_FILE = 'vault-generations.json';

export interface GenerationsFile {
  /** e.g. `<keyDir>/vault-generations.json`. */
  readonly path: string;
  /** The database and schema these generations are of, e.g. `db.example:5432/lockstep schema public`. */
  readonly scope: string;
}

interface Stored {
  readonly version: 1;
  readonly databases: Record<string, Record<string, number>>;
}

/** What the file holds for `scope` (empty when there is no file yet). Throws when the file is unusable. */
export function readGenerations(file: GenerationsFile): Map<string, number> {
  return new Map(Object.entries(readStored(file).databases[file.scope] ?? {}));
}

/** Records `seen` in the file: for each name, the higher of what the file holds and what was seen. */
export function recordGenerations(file: GenerationsFile, seen: ReadonlyMap<string, number>): void {
  const stored = readStored(file);
  const mine = { ...stored.databases[file.scope] };
  for (const [name, generation] of seen) mine[name] = Math.max(mine[name] ?? -1, generation);
  const next: Stored = { version: 1, databases: { ...stored.databases, [file.scope]: mine } };
  ensurePrivateDirectory(dirname(file.path));
  replacePrivateFile(dirname(file.path), basename(file.path), `${JSON.stringify(next, null, 2)}\n`);
}

function readStored(file: GenerationsFile): Stored {
  const text = readPrivateFile(dirname(file.path), basename(file.path));
  if (text === null) return { version: 1, databases: {} };
  try {
    const body = JSON.parse(text) as Partial<Stored>;
    if (body.version !== 1 || typeof body.databases !== 'object' || body.databases === null)
      throw new Error('not a Lockstep generations file (version 1)');
    for (const generations of Object.values(body.databases)) {
      if (typeof generations !== 'object' || generations === null) throw new Error('a database holds no generations');
      for (const generation of Object.values(generations))
        if (!Number.isSafeInteger(generation) || generation < 0) throw new Error(`${generation} is not a generation`);
    }
    return body as Stored;
  } catch (error) {
    throw new Error(
      `${file.path} is unusable (${(error as Error).message}): it holds the newest generation of each key document ` +
        'this replica has seen, to refuse older ones after a restart. Restore it from a backup; or remove it, and this ' +
        'replica accepts the key documents as the database holds them now',
      { cause: error },
    );
  }
}
