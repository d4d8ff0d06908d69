/**
 * A named ES256 signing key (policy bundles now, Txn-Tokens later): the document
 * `<name>-signing.key.pem` of the key vault, PKCS#8 (a file of that name, 0600, in a key directory).
 * Its `kid` is the RFC 7638 thumbprint of the public key, so it is stable across restarts and the same
 * everywhere it is published. It never rotates: replicas that open it at once end with one key.
 */
import { calculateJwkThumbprint, exportJWK, exportPKCS8, importPKCS8, type CryptoKey, type JWK } from 'jose';
import { documentPlace, parseKeyDocument, readOrCreate } from './key-document.ts';
import { toKeyVault, type KeyVault } from './key-vault.ts';

export interface SigningKey {
  readonly kid: string;
  readonly privateKey: CryptoKey;
  /** The public key as a JWK with kid, alg and use: what verifiers get. */
  readonly publicJwk: JWK;
}

/** `keys`: the key vault, or a key directory (today's files). */
export async function openSigningKey(
  keys: KeyVault | string,
  name: string,
  onCreated?: (message: string) => void,
): Promise<SigningKey> {
  if (!/^[a-z][a-z0-9-]{0,31}$/.test(name))
    throw new TypeError(`a signing key name is a short lower-case word such as "policy"; got ${JSON.stringify(name)}`);
  const vault = toKeyVault(keys);
  const file = `${name}-signing.key.pem`;
  const { document, created } = await readOrCreate(vault, file, createKey);
  if (created) onCreated?.(`created a NEW ${name} signing key in ${vault.where} (development material)`);
  const privateKey = await parseKeyDocument(documentPlace(vault, file), () =>
    importPKCS8(document.text, 'ES256', { extractable: true }),
  );
  const { d: _private, ...publicPart } = await exportJWK(privateKey);
  const kid = await calculateJwkThumbprint(publicPart);
  return { kid, privateKey, publicJwk: { ...publicPart, kid, alg: 'ES256', use: 'sig' } };
}

async function createKey(): Promise<string> {
  const { privateKey } = await crypto.subtle.generateKey({ name: 'ECDSA', namedCurve: 'P-256' }, true, [
    'sign',
    'verify',
  ]);
  return exportPKCS8(privateKey);
}
