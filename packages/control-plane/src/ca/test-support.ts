/** Workload-side helpers for the CA tests: a P-256 key and a CSR, built like a real workload would. */
import type { webcrypto } from 'node:crypto';
import { x509 } from '../lib/x509.ts';

export async function workloadKeys(algorithm: 'P-256' | 'P-384' | 'RSA' = 'P-256'): Promise<webcrypto.CryptoKeyPair> {
  if (algorithm === 'RSA')
    return crypto.subtle.generateKey(
      { name: 'RSASSA-PKCS1-v1_5', modulusLength: 2048, publicExponent: new Uint8Array([1, 0, 1]), hash: 'SHA-256' },
      true,
      ['sign', 'verify'],
    );
  return crypto.subtle.generateKey({ name: 'ECDSA', namedCurve: algorithm }, true, ['sign', 'verify']);
}

export interface CsrOptions {
  readonly keys?: webcrypto.CryptoKeyPair;
  readonly uris?: readonly string[];
  readonly dns?: readonly string[];
  readonly ca?: boolean;
}

export async function makeCsr(options: CsrOptions = {}): Promise<{ csrPem: string; keys: webcrypto.CryptoKeyPair }> {
  const keys = options.keys ?? (await workloadKeys());
  const names = [
    ...(options.uris ?? []).map((value) => ({ type: 'url' as const, value })),
    ...(options.dns ?? []).map((value) => ({ type: 'dns' as const, value })),
  ];
  const extensions: x509.Extension[] = [];
  if (names.length > 0) extensions.push(new x509.SubjectAlternativeNameExtension(names));
  if (options.ca !== undefined) extensions.push(new x509.BasicConstraintsExtension(options.ca, undefined, true));
  const algorithm =
    keys.privateKey.algorithm.name === 'ECDSA'
      ? {
          name: 'ECDSA',
          hash:
            (keys.privateKey.algorithm as unknown as { namedCurve: string }).namedCurve === 'P-384'
              ? 'SHA-384'
              : 'SHA-256',
        }
      : { name: 'RSASSA-PKCS1-v1_5', hash: 'SHA-256' };
  const csr = await x509.Pkcs10CertificateRequestGenerator.create({
    name: 'CN=workload',
    keys,
    signingAlgorithm: algorithm,
    extensions,
  });
  return { csrPem: csr.toString('pem'), keys };
}

export async function keyPem(key: webcrypto.CryptoKey): Promise<string> {
  return x509.PemConverter.encode(await crypto.subtle.exportKey('pkcs8', key), 'PRIVATE KEY');
}
