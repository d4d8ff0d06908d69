/**
 * An administrator's SVID, `spiffe://<td>/admin/<name>`: what the admin API requires. Issued only
 * where the CA's keys are (the `lockstep` CLI on the control plane's host), never over the network.
 */
import { x509 } from '../lib/x509.ts';
import { isServiceName, signLeaf } from './issue-svid.ts';
import type { WorkloadCa } from './workload-ca.ts';

export interface AdminCredentials {
  readonly spiffeId: string;
  readonly chainPem: string;
  readonly keyPem: string;
  readonly expiresAt: Date;
}

const DEFAULT_TTL_SECONDS = 8 * 3600;

export async function issueAdminCredentials(ca: WorkloadCa, name: string, ttlSeconds = DEFAULT_TTL_SECONDS): Promise<AdminCredentials> {
  if (!isServiceName(name)) throw new TypeError(`an administrator's name is a lower-case DNS label such as "alice"; got ${JSON.stringify(name)}`);
  const keys = await crypto.subtle.generateKey({ name: 'ECDSA', namedCurve: 'P-256' }, true, ['sign', 'verify']);
  const svid = await signLeaf(ca, keys.publicKey, `spiffe://${ca.trustDomain}/admin/${name}`, ttlSeconds);
  return {
    spiffeId: svid.spiffeId,
    chainPem: svid.chainPem,
    keyPem: x509.PemConverter.encode(await crypto.subtle.exportKey('pkcs8', keys.privateKey), 'PRIVATE KEY'),
    expiresAt: svid.notAfter,
  };
}
