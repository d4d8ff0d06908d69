/**
 * Envelope encryption of key documents (node:crypto only). Each write gets a data key (DEK) of its own:
 *
 *   sealed       AES-256-GCM(DEK, random 12-byte IV), AAD lockstep/v1/<schema>/<name>/<generation>
 *   wrappedDek   the DEK under the key-encryption key (kek.ts),
 *                AAD lockstep/v1/<schema>/<name>/<generation>/<kek-id>
 *
 * stored as base64url(iv ‖ ciphertext ‖ tag). A row copied to another name, generation or schema, or
 * relabelled with another KEK, no longer authenticates: a database writer can destroy documents but
 * not move, roll forward or forge one. (Putting back an older generation whole is caught by the vault,
 * which remembers the newest generation it has seen.)
 *
 * The document's AAD leaves the KEK out, so that a rewrap (a new KEK) changes the wrapped DEK only: the
 * DEK is what binds the document to its KEK.
 */
import { createCipheriv, createDecipheriv, randomBytes } from 'node:crypto';
import { checkDocumentName } from './key-vault.ts';
import type { Kek } from './kek.ts';
import { SQL_IDENTIFIER, type SealedDocument } from '../store/store.ts';

export type { SealedDocument } from '../store/store.ts';

export interface DocumentToSeal {
  /** The store's schema (its tenant): documents of one schema do not open in another. */
  readonly schema: string;
  readonly name: string;
  readonly generation: number;
  readonly text: string;
}

/**
 * LOCKSTEP_CP_KEYS_DAMAGED   a document whose data key opens but whose text does not authenticate
 * LOCKSTEP_CP_KEYS_ROLLBACK  an older generation than one already seen (sealed-key-vault.ts)
 */
export type KeyDocumentErrorCode = 'LOCKSTEP_CP_KEYS_DAMAGED' | 'LOCKSTEP_CP_KEYS_ROLLBACK';

export class KeyDocumentError extends Error {
  readonly code: KeyDocumentErrorCode;
  readonly document: string;
  constructor(code: KeyDocumentErrorCode, document: string, message: string) {
    super(message);
    this.name = 'KeyDocumentError';
    this.code = code;
    this.document = document;
  }
}

const IV_BYTES = 12;
const TAG_BYTES = 16;

/** What a document's text is bound to. */
function documentAad(schema: string, name: string, generation: number): string {
  checkSchema(schema);
  checkDocumentName(name);
  if (!Number.isSafeInteger(generation) || generation < 0)
    throw new TypeError(`a generation is an integer from 0; got ${generation}`);
  return `lockstep/v1/${schema}/${name}/${generation}`;
}

/** What a document's data key is bound to. */
export function dataKeyAad(schema: string, name: string, generation: number, kekId: string): string {
  return `${documentAad(schema, name, generation)}/${kekId}`;
}

export async function seal(document: DocumentToSeal, kek: Kek): Promise<SealedDocument> {
  const { schema, name, generation, text } = document;
  const aad = documentAad(schema, name, generation);
  const dek = randomBytes(32);
  try {
    const iv = randomBytes(IV_BYTES);
    const cipher = createCipheriv('aes-256-gcm', dek, iv);
    cipher.setAAD(Buffer.from(aad, 'utf8'));
    const sealed = Buffer.concat([iv, cipher.update(text, 'utf8'), cipher.final(), cipher.getAuthTag()]);
    const wrappedDek = await wrapDataKey(dek, schema, name, generation, kek);
    return { name, generation, kekId: kek.activeId, wrappedDek, sealed: sealed.toString('base64url') };
  } finally {
    dek.fill(0);
  }
}

/**
 * The text of a sealed document of `schema`. A KekError LOCKSTEP_KEK_MISMATCH when its data key does not
 * open (another KEK, or a row moved); a KeyDocumentError LOCKSTEP_CP_KEYS_DAMAGED when the text does not.
 */
export async function open(document: SealedDocument, schema: string, kek: Kek): Promise<string> {
  const dek = await unwrapDataKey(document, schema, kek);
  try {
    return decrypt(document, schema, dek).toString('utf8');
  } finally {
    dek.fill(0);
  }
}

/**
 * The document with its data key wrapped under the active KEK (`lockstep keys rewrap`); the sealed text is
 * unchanged. Already under the active KEK: the document itself. The text is checked on the way, so that a
 * damaged document is found now rather than when the old KEK is gone.
 */
export async function rewrap(document: SealedDocument, schema: string, kek: Kek): Promise<SealedDocument> {
  if (document.kekId === kek.activeId) return document;
  const dek = await unwrapDataKey(document, schema, kek);
  try {
    decrypt(document, schema, dek).fill(0);
    const wrappedDek = await wrapDataKey(dek, schema, document.name, document.generation, kek);
    return { ...document, kekId: kek.activeId, wrappedDek };
  } finally {
    dek.fill(0);
  }
}

/** The data key wrapped under the active KEK, bound to it: the AAD names the KEK that `wrap` must use. */
async function wrapDataKey(dek: Buffer, schema: string, name: string, generation: number, kek: Kek): Promise<string> {
  const { kekId, wrapped } = await kek.wrap(dek, dataKeyAad(schema, name, generation, kek.activeId));
  if (kekId !== kek.activeId)
    throw new TypeError(`a Kek wraps under its activeId (${kek.activeId}); this one answered ${kekId}`);
  return wrapped;
}

async function unwrapDataKey(document: SealedDocument, schema: string, kek: Kek): Promise<Buffer> {
  const aad = dataKeyAad(schema, document.name, document.generation, document.kekId);
  const dek = await kek.unwrap(document.kekId, document.wrappedDek, aad);
  if (dek.length !== 32) {
    dek.fill(0);
    throw damaged(document, schema, 'its data key is not 32 bytes');
  }
  return dek;
}

function decrypt(document: SealedDocument, schema: string, dek: Buffer): Buffer {
  const bytes = Buffer.from(document.sealed, 'base64url');
  if (bytes.length < IV_BYTES + TAG_BYTES) throw damaged(document, schema, 'it is too short');
  try {
    const decipher = createDecipheriv('aes-256-gcm', dek, bytes.subarray(0, IV_BYTES));
    decipher.setAAD(Buffer.from(documentAad(schema, document.name, document.generation), 'utf8'));
    decipher.setAuthTag(bytes.subarray(bytes.length - TAG_BYTES));
    return Buffer.concat([decipher.update(bytes.subarray(IV_BYTES, bytes.length - TAG_BYTES)), decipher.final()]);
  } catch {
    throw damaged(document, schema, 'its text does not authenticate under its data key');
  }
}

function damaged(document: SealedDocument, schema: string, problem: string): KeyDocumentError {
  const place = `${document.name} generation ${document.generation} in schema ${schema}`;
  return new KeyDocumentError(
    'LOCKSTEP_CP_KEYS_DAMAGED',
    document.name,
    `the sealed key document ${place} is damaged: ${problem} (the row was altered). Fix: restore the ` +
      'key_documents table from a backup; no key is used until then',
  );
}

function checkSchema(schema: string): void {
  if (!SQL_IDENTIFIER.test(schema))
    throw new TypeError(
      `a schema is a plain lower-case SQL identifier, e.g. "lockstep"; got ${JSON.stringify(schema)}`,
    );
}
