/**
 * Where the workload CA keeps its keys and certificates (workload-ca.ts), behind one small interface:
 *
 *   fileCaStorage    a key directory, as every earlier version laid it out: root.pem, root.key.pem,
 *                    intermediate.pem, intermediate.key.pem, next/ (a prepared rotation, same files)
 *                    and retiring-roots.json. Nothing else writes it: its generation is always 0.
 *   vaultCaStorage   one document `ca.json` of a shared key vault (replicas):
 *                    {version:1, current:{rootPem,intermediatePem,intermediateKeyPem}, next?:{…},
 *                    retiring:[{pem,retiresAt}]}. Written by compare-and-set on its generation.
 *                    The ROOT PRIVATE KEY is not in it: nothing signs with the root after it signed its
 *                    intermediate (a rotation creates a new root), so the root is effectively offline
 *                    and a reader of the vault cannot mint a second intermediate.
 */
import { existsSync, mkdirSync, renameSync, rmdirSync, rmSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { documentPlace } from './key-document.ts';
import {
  ensurePrivateDirectory,
  KeyFileError,
  readPrivateFile,
  replacePrivateFile,
  writePrivateFile,
} from './key-files.ts';
import type { KeyVault } from './key-vault.ts';

/** One root and the intermediate it signed, PEM. */
export interface CaKeys {
  readonly rootPem: string;
  readonly intermediatePem: string;
  readonly intermediateKeyPem: string;
  /** Only right after it was created; only the file layout keeps it (root.key.pem). */
  readonly rootKeyPem?: string;
}

export interface RetiringRoot {
  readonly pem: string;
  readonly retiresAt: number;
}

export interface CaState {
  readonly current: CaKeys;
  /** A prepared root rotation. */
  readonly next: CaKeys | null;
  readonly retiring: readonly RetiringRoot[];
}

export type CaPart = 'rootPem' | 'intermediatePem' | 'intermediateKeyPem';

export interface CaStorage {
  /** For messages: the key directory, or the document and its vault. */
  readonly where: string;
  /** Where one part is, for messages: a file, or a field of the document. */
  place(which: 'current' | 'next', part?: CaPart): string;
  /** What to say when an intermediate does not chain to its root. */
  unsignedIntermediate(which: 'current' | 'next'): string;
  /** The newest state and its generation; null when there is no CA yet. */
  load(): Promise<{ readonly generation: number; readonly state: CaState } | null>;
  /** Writes `state` if `generation` (-1: none yet) is still the newest; false when someone else wrote first. */
  save(generation: number, state: CaState): Promise<boolean>;
  /** Told when another replica wrote. Returns an unsubscribe. */
  watch(listener: () => void): () => void;
}

const FILES = {
  rootPem: 'root.pem',
  rootKey: 'root.key.pem',
  intermediatePem: 'intermediate.pem',
  intermediateKeyPem: 'intermediate.key.pem',
} as const;
const NEXT_DIR = 'next';
const RETIRING_FILE = 'retiring-roots.json';
const CA_DOCUMENT = 'ca.json';

/** The storage for `vault`: a vault that nothing else shares is a key directory, kept in today's layout. */
export function caStorageFor(vault: KeyVault): CaStorage {
  if (!vault.shared && existsSync(vault.where) && statSync(vault.where).isDirectory())
    return fileCaStorage(vault.where);
  return vaultCaStorage(vault);
}

export function fileCaStorage(keyDir: string): CaStorage {
  ensurePrivateDirectory(keyDir);
  const nextDir = join(keyDir, NEXT_DIR);
  const dirOf = (which: 'current' | 'next') => (which === 'current' ? keyDir : nextDir);
  return {
    where: keyDir,
    place: (which, part) => (part === undefined ? dirOf(which) : join(dirOf(which), FILES[part])),
    unsignedIntermediate(which) {
      const dir = dirOf(which);
      return (
        `${FILES.intermediatePem} in ${dir} is not signed by ${FILES.rootPem}, or is outside its validity. ` +
        `If a root rotation was interrupted, finish moving the files of ${join(dir, NEXT_DIR)} into ${dir}, ` +
        'or restore the directory from a backup.'
      );
    },
    async load() {
      if (
        ![FILES.rootPem, FILES.intermediatePem, FILES.intermediateKeyPem].some((file) => existsSync(join(keyDir, file)))
      )
        return null;
      const current = readKeys(keyDir);
      const next = existsSync(nextDir) ? readKeys(nextDir) : null;
      return { generation: 0, state: { current, next, retiring: readRetiring(keyDir) } };
    },
    async save(generation, state) {
      if (generation < 0) {
        try {
          writeKeys(keyDir, state.current);
        } catch (error) {
          if ((error as NodeJS.ErrnoException).code === 'EEXIST') return false;
          throw error;
        }
        return true;
      }
      const prepared = existsSync(nextDir);
      if (state.next !== null && !prepared) {
        mkdirSync(nextDir, { mode: 0o700 });
        writeKeys(nextDir, state.next);
      } else if (state.next === null && prepared) {
        replacePrivateFile(
          keyDir,
          RETIRING_FILE,
          `${JSON.stringify({ version: 1, roots: state.retiring }, null, 2)}\n`,
        );
        // Keys first, the root certificate last: a crash in between leaves a directory that the
        // consistency check on open reports (the intermediate no longer matches the root). The old
        // private keys are overwritten; only the old root's certificate is kept (retiring).
        for (const file of [FILES.intermediateKeyPem, FILES.intermediatePem, FILES.rootKey, FILES.rootPem]) {
          if (existsSync(join(nextDir, file))) renameSync(join(nextDir, file), join(keyDir, file));
          else rmSync(join(keyDir, file), { force: true });
        }
        rmdirSync(nextDir);
      }
      return true;
    },
    watch: () => () => {},
  };
}

export function vaultCaStorage(vault: KeyVault): CaStorage {
  const where = documentPlace(vault, CA_DOCUMENT);
  return {
    where,
    place: (which, part) => `${where} (${which}${part === undefined ? '' : `.${part}`})`,
    unsignedIntermediate: (which) =>
      `the ${which} intermediate in ${where} is not signed by its root, or is outside its validity. ` +
      'Restore the document from a backup.',
    async load() {
      const document = await vault.read(CA_DOCUMENT);
      return document === null
        ? null
        : { generation: document.generation, state: parseCaDocument(document.text, where) };
    },
    save: (generation, state) => vault.write(CA_DOCUMENT, generation, serializeCa(state)),
    watch: (listener) =>
      vault.watch((name) => {
        if (name === CA_DOCUMENT) listener();
      }),
  };
}

function readKeys(dir: string): CaKeys {
  ensurePrivateDirectory(dir);
  const rootPem = readPrivateFile(dir, FILES.rootPem);
  const intermediatePem = readPrivateFile(dir, FILES.intermediatePem);
  const intermediateKeyPem = readPrivateFile(dir, FILES.intermediateKeyPem);
  if (rootPem === null || intermediatePem === null || intermediateKeyPem === null) {
    throw new TypeError(
      `the CA key directory ${dir} is incomplete: it needs ${FILES.rootPem}, ${FILES.intermediatePem} and ` +
        `${FILES.intermediateKeyPem}. Restore the missing files, or move the directory away to create a new CA ` +
        '(every workload must then re-join).',
    );
  }
  return { rootPem, intermediatePem, intermediateKeyPem };
}

/** New files only (never replaces one): the root key first, as every earlier version wrote them. */
function writeKeys(dir: string, keys: CaKeys): void {
  if (keys.rootKeyPem !== undefined) writePrivateFile(dir, FILES.rootKey, keys.rootKeyPem);
  writePrivateFile(dir, FILES.rootPem, keys.rootPem);
  writePrivateFile(dir, FILES.intermediateKeyPem, keys.intermediateKeyPem);
  writePrivateFile(dir, FILES.intermediatePem, keys.intermediatePem);
}

function readRetiring(keyDir: string): RetiringRoot[] {
  const text = readPrivateFile(keyDir, RETIRING_FILE);
  if (text === null) return [];
  let parsed: { version?: number; roots?: RetiringRoot[] };
  try {
    parsed = JSON.parse(text) as typeof parsed;
  } catch (error) {
    throw new KeyFileError(join(keyDir, RETIRING_FILE), `not JSON (${(error as Error).message})`);
  }
  if (parsed.version !== 1 || !Array.isArray(parsed.roots))
    throw new KeyFileError(join(keyDir, RETIRING_FILE), 'not a Lockstep retiring-roots file (version 1)');
  return parsed.roots;
}

function serializeCa(state: CaState): string {
  return `${JSON.stringify(
    {
      version: 1,
      current: publicAndIntermediate(state.current),
      ...(state.next === null ? {} : { next: publicAndIntermediate(state.next) }),
      retiring: state.retiring.map(({ pem, retiresAt }) => ({ pem, retiresAt })),
    },
    null,
    2,
  )}\n`;
}

function parseCaDocument(text: string, where: string): CaState {
  let body: { version?: unknown; current?: unknown; next?: unknown; retiring?: unknown };
  try {
    body = JSON.parse(text) as typeof body;
  } catch (error) {
    throw new KeyFileError(where, `not JSON (${(error as Error).message})`);
  }
  const isKeys = (value: unknown): value is CaKeys =>
    typeof value === 'object' &&
    value !== null &&
    ['rootPem', 'intermediatePem', 'intermediateKeyPem'].every(
      (field) => typeof (value as Record<string, unknown>)[field] === 'string',
    );
  const isRetiring = (value: unknown): value is RetiringRoot =>
    typeof (value as RetiringRoot | null)?.pem === 'string' &&
    typeof (value as RetiringRoot | null)?.retiresAt === 'number';
  if (
    body.version !== 1 ||
    !isKeys(body.current) ||
    (body.next !== undefined && !isKeys(body.next)) ||
    !Array.isArray(body.retiring) ||
    !body.retiring.every(isRetiring)
  )
    throw new KeyFileError(where, 'not a Lockstep workload CA document (version 1)');
  return {
    current: publicAndIntermediate(body.current),
    next: body.next === undefined ? null : publicAndIntermediate(body.next as CaKeys),
    retiring: body.retiring.map(({ pem, retiresAt }) => ({ pem, retiresAt })),
  };
}

/** Field by field: the root's private key (rootKeyPem) never enters the vault. */
function publicAndIntermediate({ rootPem, intermediatePem, intermediateKeyPem }: CaKeys): CaKeys {
  return { rootPem, intermediatePem, intermediateKeyPem };
}
