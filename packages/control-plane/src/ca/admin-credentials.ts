/**
 * An administrator's SVID, `spiffe://<td>/admin/<name>`: what the admin API requires. Issued only
 * where the CA's keys are (the `lockstep` CLI on the control plane's host), never over the network.
 */
import { DEFAULT_MAX_SVID_LIFETIME_SECONDS, formatSpiffeId } from '@lockstep/identity';
import { x509 } from '../lib/x509.ts';
import { isServiceName, signLeaf } from './issue-svid.ts';
import type { WorkloadCa } from './workload-ca.ts';

export interface AdminCredentials {
  readonly spiffeId: string;
  readonly chainPem: string;
  readonly keyPem: string;
  readonly expiresAt: Date;
}

// A working day. Peers hold every SVID to 24 h (the X509-SVID rules), so that is the ceiling here too.
const DEFAULT_TTL_SECONDS = 8 * 3600;
const MAX_TTL_SECONDS = DEFAULT_MAX_SVID_LIFETIME_SECONDS;

export async function issueAdminCredentials(
  ca: WorkloadCa,
  name: string,
  ttlSeconds = DEFAULT_TTL_SECONDS,
): Promise<AdminCredentials> {
  if (!isServiceName(name))
    throw new TypeError(
      `an administrator's name is a lower-case DNS label such as "alice"; got ${JSON.stringify(name)}`,
    );
  if (!Number.isInteger(ttlSeconds) || ttlSeconds < 60 || ttlSeconds > MAX_TTL_SECONDS) {
    throw new TypeError(
      `ttlSeconds must be a whole number of seconds from 60 to ${MAX_TTL_SECONDS} ` +
        `(an SVID lives at most 24 h); got ${ttlSeconds}`,
    );
  }
  const keys = await crypto.subtle.generateKey({ name: 'ECDSA', namedCurve: 'P-256' }, true, ['sign', 'verify']);
  const svid = await signLeaf(ca, keys.publicKey, formatSpiffeId(ca.trustDomain, 'admin', name), ttlSeconds);
  return {
    spiffeId: svid.spiffeId,
    chainPem: svid.chainPem,
    keyPem: x509.PemConverter.encode(await crypto.subtle.exportKey('pkcs8', keys.privateKey), 'PRIVATE KEY'),
    expiresAt: svid.notAfter,
  };
}
