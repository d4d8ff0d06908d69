/**
 * Obtains the scanner's kit from the control plane with an administrator's credentials: a fresh
 * P-256 key (it never leaves this process), a CSR for `spiffe://<td>/scanner/<name>`, and the kit
 * (SVID, probe certificates, test Txn-Tokens; see the control plane's scan/scan-kit.ts).
 */
import 'reflect-metadata';
import * as x509 from '@peculiar/x509';
import { request } from 'undici';
import { controlPlaneAgent, type ScanKit, type ScanUser, type ServiceRecord } from '@lockstep/control-plane';

x509.cryptoProvider.set(globalThis.crypto);

export interface AdminCredentials {
  readonly cert: string;
  readonly key: string;
  /** The trust bundle (PEM). */
  readonly ca: string;
}

export interface ControlPlaneAccess {
  readonly url: string;
  readonly trustDomain: string;
  readonly admin: AdminCredentials;
}

export interface ObtainedKit {
  readonly kit: ScanKit;
  readonly keyPem: string;
  /** The Txn-Token Service's public keys (for the key-confusion attacks). */
  readonly txnJwks: { keys: Record<string, unknown>[] };
}

export class ScanSetupError extends Error {
  override readonly name = 'ScanSetupError';
}

export async function obtainScanKit(access: ControlPlaneAccess, name: string, users: readonly ScanUser[]): Promise<ObtainedKit> {
  const keys = await crypto.subtle.generateKey({ name: 'ECDSA', namedCurve: 'P-256' }, true, ['sign', 'verify']);
  const csr = await x509.Pkcs10CertificateRequestGenerator.create({
    keys, signingAlgorithm: { name: 'ECDSA', hash: 'SHA-256' },
    extensions: [new x509.SubjectAlternativeNameExtension([{ type: 'url', value: `spiffe://${access.trustDomain}/scanner/${name}` }])],
  });
  const agent = controlPlaneAgent(access.trustDomain, access.admin);
  try {
    const call = async (method: 'GET' | 'POST', path: string, body?: unknown) => {
      let response;
      try {
        response = await request(new URL(path, access.url), { method, dispatcher: agent, headersTimeout: 15_000, bodyTimeout: 15_000, ...(body === undefined ? {} : { headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) }) });
      } catch (error) {
        throw new ScanSetupError(`cannot reach the control plane at ${access.url}: ${(error as Error).message}; is \`lockstep control-plane\` running?`);
      }
      const answer = await response.body.json().catch(() => ({})) as Record<string, unknown>;
      if (response.statusCode >= 400) throw new ScanSetupError(`${method} ${path} refused (${response.statusCode} ${String(answer.error ?? '')}): ${String(answer.message ?? '')}`);
      return answer;
    };
    const kit = await call('POST', '/v1/admin/scan-kit', { name, csr: csr.toString('pem'), users }) as unknown as ScanKit;
    const txnJwks = await call('GET', '/v1/txn-token/jwks.json') as unknown as ObtainedKit['txnJwks'];
    const keyPem = x509.PemConverter.encode(await crypto.subtle.exportKey('pkcs8', keys.privateKey), 'PRIVATE KEY');
    return { kit, keyPem, txnJwks };
  } finally {
    await agent.close();
  }
}

/** The registry's list (administrators may read it). */
export async function registeredServices(access: ControlPlaneAccess): Promise<RegisteredService[]> {
  const agent = controlPlaneAgent(access.trustDomain, access.admin);
  try {
    const response = await request(new URL('/v1/services', access.url), { dispatcher: agent, headersTimeout: 15_000, bodyTimeout: 15_000 });
    const answer = await response.body.json() as { services?: RegisteredService[]; error?: string };
    if (response.statusCode !== 200 || !Array.isArray(answer.services)) throw new ScanSetupError(`GET /v1/services refused (${response.statusCode} ${answer.error ?? ''})`);
    return answer.services;
  } catch (error) {
    if (error instanceof ScanSetupError) throw error;
    throw new ScanSetupError(`cannot read the registry at ${access.url}: ${(error as Error).message}`);
  } finally {
    await agent.close();
  }
}

/** A registry entry as `GET /v1/services` answers it. */
export type RegisteredService = ServiceRecord & { readonly stale: boolean };
