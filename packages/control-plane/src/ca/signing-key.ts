/**
 * A named ES256 signing key (policy bundles now, Txn-Tokens later) kept in the private key directory
 * as PKCS#8 (0600). Its `kid` is the RFC 7638 thumbprint of the public key, so it is stable across
 * restarts and the same everywhere it is published.
 */
import { calculateJwkThumbprint, exportJWK, exportPKCS8, importPKCS8, type CryptoKey, type JWK } from 'jose';
import { ensurePrivateDirectory, parseKeyFile, readPrivateFile, writePrivateFile } from './key-files.ts';

export interface SigningKey {
  readonly kid: string;
  readonly privateKey: CryptoKey;
  /** The public key as a JWK with kid, alg and use: what verifiers get. */
  readonly publicJwk: JWK;
}

export async function openSigningKey(
  keyDir: string,
  name: string,
  onCreated?: (message: string) => void,
): Promise<SigningKey> {
  if (!/^[a-z][a-z0-9-]{0,31}$/.test(name))
    throw new TypeError(`a signing key name is a short lower-case word such as "policy"; got ${JSON.stringify(name)}`);
  ensurePrivateDirectory(keyDir);
  const file = `${name}-signing.key.pem`;
  const pem = readPrivateFile(keyDir, file) ?? (await createKeyFile(keyDir, file, name, onCreated));
  const privateKey = await parseKeyFile(keyDir, file, () => importPKCS8(pem, 'ES256', { extractable: true }));
  const { d: _private, ...publicPart } = await exportJWK(privateKey);
  const kid = await calculateJwkThumbprint(publicPart);
  return { kid, privateKey, publicJwk: { ...publicPart, kid, alg: 'ES256', use: 'sig' } };
}

async function createKeyFile(
  keyDir: string,
  file: string,
  name: string,
  onCreated?: (message: string) => void,
): Promise<string> {
  const { privateKey } = await crypto.subtle.generateKey({ name: 'ECDSA', namedCurve: 'P-256' }, true, [
    'sign',
    'verify',
  ]);
  const pem = await exportPKCS8(privateKey);
  writePrivateFile(keyDir, file, pem);
  onCreated?.(`created a NEW ${name} signing key in ${keyDir} (development material)`);
  return pem;
}
