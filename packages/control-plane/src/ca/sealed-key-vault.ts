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
 */
import { dataKeyAad, KeyDocumentError, open, rewrap, seal } from './sealed.ts';
import { checkDocumentName, type KeyVault } from './key-vault.ts';
import type { Kek } from './kek.ts';
import type { ControlPlaneStore } from '../store/store.ts';

export interface SealedKeyVaultOptions {
  readonly store: ControlPlaneStore;
  readonly kek: Kek;
  /** The store's schema (PostgreSQL), bound into every document: documents of one schema do not open in another. */
  readonly schema: string;
  /** How often the store is re-read for other replicas' writes (a notification may be lost). */
  readonly rereadMs?: number;
}

/** The vault stays the store's guest: closing it does not close the store. */
export async function sealedKeyVault(options: SealedKeyVaultOptions): Promise<KeyVault> {
  const { store, kek, schema, rereadMs = 30_000 } = options;
  dataKeyAad(schema, 'check', 0, kek.activeId); // refuses a schema the AAD cannot carry, at start
  if (!(rereadMs > 0)) throw new TypeError(`rereadMs must be a positive number of milliseconds; got ${rereadMs}`);
  const listeners = new Set<(name: string) => void>();
  /** The newest generation of each name seen in any way: nothing older is ever returned. */
  const highest = new Map<string, number>();
  /** The generation of each name that listeners know of (there at start, written here, or reported). */
  const announced = new Map<string, number>();
  /** `name#generation` of this vault's writes in flight, each counted: a re-read leaves them to `write`. */
  const writing = new Map<string, number>();
  /** Names reported as rolled back, reported once until they move on again. */
  const rolledBack = new Set<string>();

  const see = (name: string, generation: number) => {
    if (generation > (highest.get(name) ?? -1)) highest.set(name, generation);
  };
  const report = (name: string) => {
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
        report(name);
      }
    }
    // Lower than seen (or gone): a rollback. Reported once, so that the owner reads and refuses it.
    for (const [name, generation] of before) {
      if ((generations.get(name) ?? -1) >= generation) rolledBack.delete(name);
      else if (!rolledBack.has(name)) {
        rolledBack.add(name);
        report(name);
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
      })
      .catch(() => {
        queued = false; // the store is unreachable now: the next notification or tick reads again
      });
  };

  for (const [name, generation] of await store.keyDocumentGenerations()) {
    see(name, generation);
    announced.set(name, generation);
  }
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
            'find out who, and restore the key_documents table from a backup',
        );
      if (document === null) return null;
      const text = await open(document, schema, kek);
      see(name, document.generation);
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
  /** Documents whose newest generation is now wrapped under the active KEK. */
  readonly rewrapped: readonly string[];
  /** Already under the active KEK. */
  readonly current: readonly string[];
  /** Written by a replica meanwhile: run the rewrap again (and check that every replica has the new KEK first). */
  readonly changed: readonly string[];
}

/**
 * `lockstep keys rewrap`: the newest generation of every document, its data key re-wrapped under the
 * active KEK. Every replica must hold the new KEK first (first line) and the old one still (a later line).
 */
export async function rewrapKeyDocuments(store: ControlPlaneStore, kek: Kek, schema: string): Promise<KeyRewrap> {
  const rewrapped: string[] = [];
  const current: string[] = [];
  const changed: string[] = [];
  for (const document of await store.keyDocuments()) {
    const next = await rewrap(document, schema, kek);
    if (next === document) current.push(document.name);
    else if (await store.rewrapKeyDocument(document, next)) rewrapped.push(document.name);
    else changed.push(document.name);
  }
  return { rewrapped, current, changed };
}
