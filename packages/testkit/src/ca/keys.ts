import { KeyObject } from 'node:crypto';
import type { webcrypto } from 'node:crypto';

const P256 = { name: 'ECDSA', namedCurve: 'P-256' } as const;

/** A fresh ECDSA P-256 key pair, extractable so the private key can be handed to Node's TLS as PEM. */
export async function generateP256KeyPair(): Promise<webcrypto.CryptoKeyPair> {
  return globalThis.crypto.subtle.generateKey(P256, true, ['sign', 'verify']);
}

export function exportPkcs8Pem(privateKey: webcrypto.CryptoKey): string {
  return KeyObject.from(privateKey).export({ type: 'pkcs8', format: 'pem' }).toString();
}
