/**
 * The key-encryption key (KEK): what seals the control plane's private keys in a shared store
 * (sealed.ts). It never enters the database; a database reader gets nothing usable without it.
 *
 *   LOCKSTEP_KEK_FILE   a file readable by its owner only (0600 or 0400): a Kubernetes Secret volume
 *                       (defaultMode 0400) or a CSI Secrets-Store mount
 *   LOCKSTEP_KEK        the same text in the variable itself
 *
 * The text is one or more lines `<kek-id> <base64url of 32 random bytes>`; blank lines and `#` comments
 * are ignored. The first line encrypts; the others only decrypt. Rotation: put a new line first, restart
 * every replica, run `lockstep keys rewrap` (re-wraps the data keys only), then drop the old line.
 *
 * `Kek` is the seam for a KMS: only data keys (32 bytes) cross it, each bound to `aad`, which names the
 * document it seals (`lockstep/v1/<schema>/<name>/<generation>/<kek-id>`). A KMS-backed Kek maps it as:
 *   AWS KMS        Encrypt/Decrypt with EncryptionContext { lockstep: aad } (logged in CloudTrail)
 *   GCP Cloud KMS  encrypt/decrypt with additionalAuthenticatedData = aad
 *   Vault transit  encrypt/decrypt with context = base64(aad) (a derived key per document)
 * and `kekId` is the key's ARN, resource name or transit key name.
 */
import { createCipheriv, createDecipheriv, createSecretKey, randomBytes, type KeyObject } from 'node:crypto';
import { existsSync, readFileSync, statSync } from 'node:fs';
import { KeyPermissionError } from './key-files.ts';

export interface WrappedKey {
  /** The KEK that wrapped it: give it to `unwrap`. */
  readonly kekId: string;
  /** base64url; for the file KEK, base64url(iv ‖ ciphertext ‖ tag). */
  readonly wrapped: string;
}

export interface Kek {
  /** The KEK that `wrap` uses. */
  readonly activeId: string;
  /** Encrypts a data key under the active KEK, bound to `aad`. */
  wrap(dek: Uint8Array, aad: string): Promise<WrappedKey>;
  /** The data key; a KekError LOCKSTEP_KEK_MISMATCH when `kekId` is unknown here or the wrap does not authenticate. */
  unwrap(kekId: string, wrapped: string, aad: string): Promise<Buffer>;
}

export type KekErrorCode = 'LOCKSTEP_KEK_MISMATCH' | 'LOCKSTEP_KEK_INVALID';

export class KekError extends Error {
  readonly code: KekErrorCode;
  /** The KEK a mismatch is about. */
  readonly kekId: string | undefined;
  constructor(code: KekErrorCode, message: string, kekId?: string) {
    super(message);
    this.name = 'KekError';
    this.code = code;
    this.kekId = kekId;
  }
}

const KEK_ID = /^[A-Za-z0-9][A-Za-z0-9._:-]{0,63}$/;
const KEY = /^[A-Za-z0-9_-]{43}=?$/;
const IV_BYTES = 12;
const TAG_BYTES = 16;
const MAKE_ONE = `node -e "console.log('k1', require('node:crypto').randomBytes(32).toString('base64url'))"`;

/**
 * The KEK the environment gives, or null when it gives none. A file with a wider mode than 0600 is
 * refused (KeyPermissionError), and so is text that is not what it should be (KekError LOCKSTEP_KEK_INVALID).
 */
export function readKek(env: NodeJS.ProcessEnv = process.env): Kek | null {
  const file = env.LOCKSTEP_KEK_FILE;
  const inline = env.LOCKSTEP_KEK;
  if (file !== undefined && file !== '' && inline !== undefined && inline !== '')
    throw invalid('both LOCKSTEP_KEK_FILE and LOCKSTEP_KEK are set; set one of them (the file, in production)');
  if (file !== undefined && file !== '') return parseKek(readKekFile(file), `LOCKSTEP_KEK_FILE ${file}`);
  if (inline !== undefined && inline !== '') return parseKek(inline, 'LOCKSTEP_KEK');
  return null;
}

/** A fresh line for a KEK file: `<id> <32 random bytes, base64url>`. */
export function createKekText(id = `kek-${new Date().toISOString().slice(0, 10)}-${randomBytes(2).toString('hex')}`) {
  if (!KEK_ID.test(id)) throw new TypeError(`${badId()}; got ${JSON.stringify(id)}`);
  return `${id} ${randomBytes(32).toString('base64url')}\n`;
}

/** The KEK of a KEK file's text; `source` says where it came from, for messages. */
export function parseKek(text: string, source: string): Kek {
  const keys = new Map<string, KeyObject>();
  const lines = text.split(/\r?\n/);
  for (const [index, raw] of lines.entries()) {
    const line = raw.trim();
    if (line === '' || line.startsWith('#')) continue;
    // Messages name the line, never its content: it holds a key.
    const where = `${source}, line ${index + 1}`;
    const fields = line.split(/\s+/);
    if (fields.length !== 2)
      throw invalid(
        `${where}: a line is "<kek-id> <key>", two fields separated by a space; it has ${fields.length}. ` +
          `Fix: make one with ${MAKE_ONE}`,
      );
    const [id, key] = fields as [string, string];
    if (!KEK_ID.test(id)) throw invalid(`${where}: ${badId()}`);
    if (keys.has(id)) throw invalid(`${where}: key-encryption key ${id} is given twice; give each id once`);
    if (!KEY.test(key))
      throw invalid(
        `${where}: the key of ${id} is not base64url of exactly 32 bytes (43 characters of A-Z a-z 0-9 - _). ` +
          `Fix: make one with ${MAKE_ONE}`,
      );
    keys.set(id, createSecretKey(Buffer.from(key, 'base64url')));
  }
  const [activeId] = keys.keys();
  if (activeId === undefined)
    throw invalid(`${source} holds no key: give a line "<kek-id> <key>", made e.g. with ${MAKE_ONE}`);
  return fileKek(activeId, keys);
}

function fileKek(activeId: string, keys: ReadonlyMap<string, KeyObject>): Kek {
  return {
    activeId,
    async wrap(dek, aad) {
      const iv = randomBytes(IV_BYTES);
      const cipher = createCipheriv('aes-256-gcm', keys.get(activeId) as KeyObject, iv);
      cipher.setAAD(Buffer.from(aad, 'utf8'));
      const wrapped = Buffer.concat([iv, cipher.update(dek), cipher.final(), cipher.getAuthTag()]);
      return { kekId: activeId, wrapped: wrapped.toString('base64url') };
    },
    async unwrap(kekId, wrapped, aad) {
      const key = keys.get(kekId);
      if (key === undefined)
        throw new KekError(
          'LOCKSTEP_KEK_MISMATCH',
          `this database's keys were sealed under key-encryption key ${kekId}, which is not among the keys given ` +
            `(${[...keys.keys()].join(', ')}); give that key in LOCKSTEP_KEK_FILE`,
          kekId,
        );
      const bytes = Buffer.from(wrapped, 'base64url');
      try {
        if (bytes.length <= IV_BYTES + TAG_BYTES) throw new Error('too short');
        const decipher = createDecipheriv('aes-256-gcm', key, bytes.subarray(0, IV_BYTES));
        decipher.setAAD(Buffer.from(aad, 'utf8'));
        decipher.setAuthTag(bytes.subarray(bytes.length - TAG_BYTES));
        return Buffer.concat([decipher.update(bytes.subarray(IV_BYTES, bytes.length - TAG_BYTES)), decipher.final()]);
      } catch {
        throw new KekError(
          'LOCKSTEP_KEK_MISMATCH',
          `the data key of ${aad} does not open under key-encryption key ${kekId}: this database's keys were sealed ` +
            `under key-encryption key ${kekId}, and the key given under that id is another one (give that key in ` +
            'LOCKSTEP_KEK_FILE), or the row was altered or moved to another name, generation or schema',
          kekId,
        );
      }
    },
  };
}

function readKekFile(file: string): string {
  if (!existsSync(file))
    throw invalid(`LOCKSTEP_KEK_FILE names ${file}, which does not exist. Fix: point it at the KEK file`);
  const mode = statSync(file).mode & 0o777;
  if (mode !== 0o600 && mode !== 0o400)
    throw new KeyPermissionError(
      `key-encryption key file ${file} has mode ${mode.toString(8).padStart(3, '0')}; only its owner may read it ` +
        `(0600 or 0400). Fix: chmod 600 ${JSON.stringify(file)}`,
    );
  try {
    return readFileSync(file, 'utf8');
  } catch (error) {
    throw invalid(`LOCKSTEP_KEK_FILE ${file} cannot be read: ${(error as Error).message}`);
  }
}

function invalid(message: string): KekError {
  return new KekError('LOCKSTEP_KEK_INVALID', message);
}

function badId(): string {
  return 'a key-encryption key id is 1 to 64 letters, digits, ".", "_", ":" or "-", starting with a letter or digit';
}
