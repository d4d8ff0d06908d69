/**
 * Where the control plane's private key material lives: one text document per key set (a key ring's
 * JSON, the policy key's PKCS#8, the cookie secret, the CA's JSON), each with a generation that grows
 * by one per write.
 *
 *   fileKeyVault     the private key directory of one control plane (0700, files 0600): a document is
 *                    a file of the same name; its generation is always 0 (nothing else writes it).
 *   sealedKeyVault   the store (PostgreSQL, shared by every replica): documents encrypted under a
 *                    key-encryption key that never enters the database (sealed-key-vault.ts).
 *
 * Writers never overwrite each other: `write(name, generation, …)` writes generation + 1 only if the
 * newest one is still `generation` (compare-and-set), and answers false otherwise — the writer reads
 * again and redoes its change on what it finds. That is how two replicas rotating one ring at once
 * end with one consistent ring, without a lock held across the network.
 */
import { ensurePrivateDirectory, readPrivateFile, replacePrivateFile, writePrivateFile } from './key-files.ts';

export interface KeyDocument {
  readonly name: string;
  /** 0 for the first version; +1 per write. */
  readonly generation: number;
  readonly text: string;
}

export interface KeyVault {
  /** Where the keys are, for messages: a directory, or "PostgreSQL schema lockstep (key-encryption key k1)". */
  readonly where: string;
  /** True when other processes (replicas) share these documents and may change them. */
  readonly shared: boolean;
  /** The newest generation of `name`, or null when there is none. */
  read(name: string): Promise<KeyDocument | null>;
  /**
   * Writes `text` as the next generation of `name`: `generation` is the one it replaces (-1 for a new
   * document). False when someone else wrote it first; nothing was written then.
   */
  write(name: string, generation: number, text: string): Promise<boolean>;
  /**
   * Tells `listener` the name of a document another process wrote (a notification, or found by a
   * periodic re-read). Returns an unsubscribe. A vault that nothing else writes never calls it.
   */
  watch(listener: (name: string) => void): () => void;
  close(): Promise<void>;
}

/** Document names: what the file vault stores them as, too. */
const NAME = /^[a-z][a-z0-9.-]{0,63}$/;

export function checkDocumentName(name: string): void {
  if (!NAME.test(name)) throw new TypeError(`a key document name is a short file name; got ${JSON.stringify(name)}`);
}

/** Today's private key directory, behind the vault interface. */
export function fileKeyVault(keyDir: string): KeyVault {
  ensurePrivateDirectory(keyDir);
  return {
    where: keyDir,
    shared: false,
    async read(name) {
      checkDocumentName(name);
      const text = readPrivateFile(keyDir, name);
      return text === null ? null : { name, generation: 0, text };
    },
    async write(name, generation, text) {
      checkDocumentName(name);
      if (generation < 0) {
        try {
          writePrivateFile(keyDir, name, text);
        } catch (error) {
          if ((error as NodeJS.ErrnoException).code === 'EEXIST') return false;
          throw error;
        }
      } else replacePrivateFile(keyDir, name, text);
      return true;
    },
    watch: () => () => {},
    close: async () => {},
  };
}

/** Accepts what older callers pass (a key directory) as well as a vault. */
export function toKeyVault(keys: KeyVault | string): KeyVault {
  return typeof keys === 'string' ? fileKeyVault(keys) : keys;
}
