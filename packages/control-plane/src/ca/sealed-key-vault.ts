/**
 * The key vault of control-plane replicas (key-vault.ts): key documents sealed (sealed.ts) in the store
 * they share, under a key-encryption key each replica is given (kek.ts) and the database never sees.
 *
 * Writes are compare-and-set on the generation (the store's `putKeyDocument`). Other replicas' writes
 * are reported to `watch` listeners when the store notifies (PostgreSQL LISTEN/NOTIFY) and, as a safety
 * net, when a periodic re-read finds a generation moved; never this vault's own writes.
 *
 * Rollback: a database writer cannot forge or move a document, but can delete the newest generations so
 * that an older, authentic one is newest again (an older ring, a retired CA key). The vault remembers the
 * newest generation of each name it has seen, and refuses to read an older one (LOCKSTEP_CP_KEYS_ROLLBACK).
 * Given a local file (`generationsFile`: vault-generations.ts), it remembers them across restarts too.
 */
import { dataKeyAad, KeyDocumentError, open, rewrap, seal } from './sealed.ts';
import { checkDocumentName, type KeyVault } from './key-vault.ts';
import type { Kek } from './kek.ts';
import { readGenerations, recordGenerations, type GenerationsFile } from './vault-generations.ts';
import type { ControlPlaneStore, SealedDocument } from '../store/store.ts';

export interface SealedKeyVaultOptions {
  readonly store: ControlPlaneStore;
  readonly kek: Kek;
  /** The store's schema (PostgreSQL), bound into every document: documents of one schema do not open in another. */
  readonly schema: string;
  /** How often the store is re-read for other replicas' writes (a notification may be lost). */
  readonly rereadMs?: number;
  /**
   * Where the newest generation of each document seen is kept across restarts (a file of this replica's,
   * e.g. `<keyDir>/vault-generations.json`): a rollback made while it was down is refused too. Without it,
   * only what this process has seen is remembered.
   */
  readonly generationsFile?: GenerationsFile;
  /** Told when the generations file cannot be written (the vault goes on, remembering in memory). Default: stderr. */
  readonly onError?: (error: Error) => void;
}

/** The vault stays the store's guest: closing it does not close the store. */
export async function sealedKeyVault(options: SealedKeyVaultOptions): Promise<KeyVault> {
  const { store, kek, schema, rereadMs = 30_000, generationsFile } = options;
  const report = (error: Error) =>
    options.onError ? options.onError(error) : process.stderr.write(`lockstep: key vault: ${error.message}\n`);
  dataKeyAad(schema, 'check', 0, kek.activeId); // refuses a schema the AAD cannot carry, at start
  if (!(rereadMs > 0)) throw new TypeError(`rereadMs must be a positive number of milliseconds; got ${rereadMs}`);
  const listeners = new Set<(name: string) => void>();
  /** The newest generation of each name seen in any way (by an earlier start too): nothing older is ever returned. */
  const highest = generationsFile === undefined ? new Map<string, number>() : readGenerations(generationsFile);
  /** What the generations file holds (for this store), as far as this vault knows. */
  const recorded = new Map(highest);
  /** The generation of each name that listeners know of (there at start, written here, or reported). */
  const announced = new Map<string, number>();
  /** `name#generation` of this vault's writes in flight, each counted: a re-read leaves them to `write`. */
  const writing = new Map<string, number>();
  /** Names reported as rolled back, reported once until they move on again. */
  const rolledBack = new Set<string>();

  const see = (name: string, generation: number) => {
    if (generation > (highest.get(name) ?? -1)) highest.set(name, generation);
  };
  /** Writes what is newer than the file holds to it (rarely: a generation is a rotation). */
  const remember = () => {
    if (generationsFile === undefined) return;
    const newer = [...highest].filter(([name, generation]) => generation > (recorded.get(name) ?? -1));
    if (newer.length === 0) return;
    try {
      recordGenerations(generationsFile, new Map(newer));
      for (const [name, generation] of newer) recorded.set(name, generation);
    } catch (error) {
      report(error as Error); // remembered in memory still; written with the next change
    }
  };
  const tell = (name: string) => {
    for (const listener of listeners) {
      try {
        listener(name);
      } catch {
        // One listener's failure is its own: the others still hear.
      }
    }
  };
  /** `before`: what had been seen when the re-read began (anything seen later may be newer than the read). */
  const compare = (generations: ReadonlyMap<string, number>, before: ReadonlyMap<string, number>) => {
    for (const [name, generation] of generations) {
      if (writing.has(`${name}#${generation}`)) continue; // settled by write()
      see(name, generation);
      if (generation > (announced.get(name) ?? -1)) {
        announced.set(name, generation);
        rolledBack.delete(name);
        tell(name);
      }
    }
    // Lower than seen (or gone): a rollback. Reported once, so that the owner reads and refuses it.
    for (const [name, generation] of before) {
      if ((generations.get(name) ?? -1) >= generation) rolledBack.delete(name);
      else if (!rolledBack.has(name)) {
        rolledBack.add(name);
        tell(name);
      }
    }
  };

  let queued = false;
  let rereading: Promise<void> = Promise.resolve();
  const reread = () => {
    if (queued) return;
    queued = true;
    rereading = rereading
      .then(async () => {
        queued = false;
        const before = new Map(highest);
        compare(await store.keyDocumentGenerations(), before);
        remember();
      })
      .catch(() => {
        queued = false; // the store is unreachable now: the next notification or tick reads again
      });
  };

  for (const [name, generation] of await store.keyDocumentGenerations()) {
    see(name, generation);
    announced.set(name, generation);
  }
  remember();
  const stopWatching = store.watchKeys ? await store.watchKeys(reread) : async () => {};
  const timer = setInterval(reread, rereadMs);
  timer.unref();

  const place = store.kind === 'postgres' ? `PostgreSQL schema ${schema}` : 'SQLite store';
  return {
    where: `${place} (key-encryption key ${kek.activeId})`,
    shared: true,
    async read(name) {
      checkDocumentName(name);
      // What was seen before asking: the answer holds at least that, unless the store went back.
      const seen = highest.get(name);
      const document = await store.keyDocument(name);
      if (seen !== undefined && (document === null || document.generation < seen))
        throw new KeyDocumentError(
          'LOCKSTEP_CP_KEYS_ROLLBACK',
          name,
          `the key document ${name} went back from generation ${seen} to ` +
            `${document === null ? 'none at all' : `generation ${document.generation}`} in ${schema}: someone ` +
            'with write access to the database deleted its newer generations, to bring older keys back. Refused; ' +
            'find out who, and restore the key_documents table from a backup' +
            (generationsFile === undefined
              ? ''
              : `. If the database was restored from an older backup on purpose, remove ${generationsFile.path} ` +
                '(what this replica has seen) on every replica, and restart them'),
        );
      if (document === null) return null;
      const text = await open(document, schema, kek);
      see(name, document.generation);
      remember();
      return { name, generation: document.generation, text };
    },
    async write(name, generation, text) {
      checkDocumentName(name);
      if (!Number.isSafeInteger(generation) || generation < -1)
        throw new TypeError(`generation is the one replaced, from -1 (none yet); got ${generation}`);
      // Replacing one older than seen: the caller's read is stale (or the store went back), never a fork.
      if (generation < (highest.get(name) ?? -1)) return false;
      const next = generation + 1;
      const key = `${name}#${next}`;
      writing.set(key, (writing.get(key) ?? 0) + 1);
      let written = false;
      try {
        written = await store.putKeyDocument(await seal({ schema, name, generation: next, text }, kek));
      } finally {
        const left = (writing.get(key) ?? 1) - 1;
        if (left === 0) writing.delete(key);
        else writing.set(key, left);
      }
      if (written) {
        see(name, next);
        remember();
        if (next > (announced.get(name) ?? -1)) announced.set(name, next);
      } else reread(); // someone else's generation, which a re-read meanwhile left to this write
      return written;
    },
    watch(listener) {
      const own = (name: string) => listener(name);
      listeners.add(own);
      return () => listeners.delete(own);
    },
    async close() {
      clearInterval(timer);
      listeners.clear();
      await stopWatching();
      await rereading;
    },
  };
}

export interface KeyRewrap {
  /** Stored generations (`name#generation`) whose data key is now wrapped under the active KEK. */
  readonly rewrapped: readonly string[];
  /** Already under the active KEK. */
  readonly current: readonly string[];
  /**
   * Still under another KEK once done: written meanwhile by a replica that seals under the old one (check that
   * every replica has the new KEK first), then run the rewrap again.
   */
  readonly changed: readonly string[];
}

/**
 * `lockstep keys rewrap`: every kept generation of every document, its data key re-wrapped under the active
 * KEK — not only the newest: older generations hold keys in use (a ring's previous generation holds today's
 * current key as its next, `ca.json` before a prepare today's intermediate key). Every replica must hold the
 * new KEK first (first line) and the old one still (a later line). Once `changed` is empty, no row needs the
 * old KEK.
 */
export async function rewrapKeyDocuments(store: ControlPlaneStore, kek: Kek, schema: string): Promise<KeyRewrap> {
  const label = (document: SealedDocument) => `${document.name}#${document.generation}`;
  const rewrapped: string[] = [];
  const current: string[] = [];
  for (const document of await store.keyDocuments()) {
    const next = await rewrap(document, schema, kek);
    if (next === document) current.push(label(document));
    else if (await store.rewrapKeyDocument(document, next)) rewrapped.push(label(document));
    // Otherwise the row changed or went meanwhile (pruned by a newer generation, or another rewrap): the
    // check below finds it if it still needs the old KEK.
  }
  const changed = (await store.keyDocuments()).filter((document) => document.kekId !== kek.activeId).map(label);
  return { rewrapped, current, changed };
}
