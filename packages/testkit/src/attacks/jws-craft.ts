import { CompactSign, base64url, calculateJwkThumbprint, exportJWK, generateKeyPair } from 'jose';
import type { CompactJWSHeaderParameters, CryptoKey, JWK } from 'jose';

const encoder = new TextEncoder();

/** base64url of a JSON value, of a string's UTF-8 bytes, or of raw bytes. */
export function segment(value: Uint8Array | string | object): string {
  if (value instanceof Uint8Array) return base64url.encode(value);
  return base64url.encode(typeof value === 'string' ? value : JSON.stringify(value));
}

export function decodeSegment(encoded: string): unknown {
  return JSON.parse(new TextDecoder().decode(base64url.decode(encoded)));
}

/** header.payload. — a compact JWS shape with an empty signature. */
export function unsignedCompact(header: object, payload: object): string {
  return `${segment(header)}.${segment(payload)}.`;
}

/**
 * ES256 over exact payload bytes with jose (the payload may be hand-written JSON).
 * `crit` names extension headers jose should accept while signing.
 */
export async function signCompact(
  header: CompactJWSHeaderParameters,
  payload: Uint8Array | string,
  key: CryptoKey,
  crit?: readonly string[],
): Promise<string> {
  const bytes = typeof payload === 'string' ? encoder.encode(payload) : payload;
  const sign = new CompactSign(bytes).setProtectedHeader(header);
  return crit === undefined
    ? sign.sign(key)
    : sign.sign(key, { crit: Object.fromEntries(crit.map((name) => [name, true])) });
}

/**
 * ES256 over a hand-written protected header. jose always serialises the header from an
 * object, so a header with a duplicated member cannot be produced through it; the signature
 * itself is plain WebCrypto ECDSA, whose r||s output is the JWS encoding (RFC 7518 §3.4).
 */
export async function signRawHeader(headerJson: string, payload: object, key: CryptoKey): Promise<string> {
  const signingInput = `${segment(headerJson)}.${segment(payload)}`;
  const signature = await globalThis.crypto.subtle.sign(
    { name: 'ECDSA', hash: 'SHA-256' },
    key,
    encoder.encode(signingInput),
  );
  return `${signingInput}.${segment(new Uint8Array(signature))}`;
}

export interface AttackerKey {
  readonly kid: string;
  readonly privateKey: CryptoKey;
  readonly publicJwk: JWK;
}

/** A P-256 key nobody trusts. */
export async function generateAttackerKey(): Promise<AttackerKey> {
  const { privateKey, publicKey } = await generateKeyPair('ES256');
  const publicJwk = await exportJWK(publicKey);
  return { kid: await calculateJwkThumbprint(publicJwk), privateKey, publicJwk };
}
