/**
 * Helpers for the CA tests: a P-256 key and a CSR, built like a real workload would; a key vault in
 * memory shared by several "replicas".
 */
import type { webcrypto } from 'node:crypto';
import { setImmediate as tick } from 'node:timers/promises';
import { x509 } from '../lib/x509.ts';
import type { KeyDocument, KeyVault } from './key-vault.ts';

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

/**
 * One set of key documents in memory, as a shared vault keeps them: each `replica()` is a KeyVault
 * whose `watch` hears the other replicas' writes (a tick later, as a notification would arrive), never
 * its own. Reads and writes take a tick, so replicas that start at once really interleave.
 */
export function sharedMemoryVault(): { replica(): KeyVault; readonly documents: Map<string, KeyDocument> } {
  const documents = new Map<string, KeyDocument>();
  const replicas = new Set<Set<(name: string) => void>>();
  return {
    documents,
    replica() {
      const listeners = new Set<(name: string) => void>();
      replicas.add(listeners);
      return {
        where: 'memory',
        shared: true,
        async read(name) {
          await tick();
          return documents.get(name) ?? null;
        },
        async write(name, generation, text) {
          await tick();
          if ((documents.get(name)?.generation ?? -1) !== generation) return false;
          documents.set(name, { name, generation: generation + 1, text });
          for (const other of replicas)
            if (other !== listeners) for (const listener of other) setImmediate(() => listener(name));
          return true;
        },
        watch(listener) {
          listeners.add(listener);
          return () => listeners.delete(listener);
        },
        async close() {
          replicas.delete(listeners);
        },
      };
    },
  };
}
