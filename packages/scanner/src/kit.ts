/**
 * Obtains the scanner's kit from the control plane with an administrator's credentials: a fresh
 * P-256 key (it never leaves this process), a CSR for `spiffe://<td>/scanner/<name>`, and the kit
 * (SVID, probe certificates, test Txn-Tokens; see the control plane's scan/scan-kit.ts).
 */
import 'reflect-metadata';
import type { webcrypto } from 'node:crypto';
import * as x509 from '@peculiar/x509';
import { type ScanKit, type ScanUser, type ServiceRecord } from '@lockstep/control-plane';
import { controlPlaneEndpoints, formatSpiffeId, type ControlPlaneEndpoints } from '@lockstep/identity';
import { callControlPlane, refusalOf, type JsonAnswer } from '@lockstep/workload';
import type { ScanReport } from './types.ts';

x509.cryptoProvider.set(globalThis.crypto);

export interface AdminCredentials {
  readonly cert: string;
  readonly key: string;
  /** The trust bundle (PEM). */
  readonly ca: string;
}

export interface ControlPlaneAccess {
  /** The control plane: one URL, or its replicas' (a list, or comma-separated), asked in turn. */
  readonly url: string | readonly string[];
  readonly trustDomain: string;
  readonly admin: AdminCredentials;
}

export interface ObtainedKit {
  readonly kit: ScanKit;
  readonly keyPem: string;
  /** The same key, for signing probe proofs. */
  readonly privateKey: webcrypto.CryptoKey;
  /** The Txn-Token Service's public keys (for the key-confusion attacks). */
  readonly txnJwks: { keys: Record<string, unknown>[] };
}

export class ScanSetupError extends Error {
  override readonly name = 'ScanSetupError';
}

/** One endpoint set per access: the replica that answered last is asked first by the next call. */
const endpointSets = new WeakMap<ControlPlaneAccess, ControlPlaneEndpoints>();

function endpointsFor(access: ControlPlaneAccess): ControlPlaneEndpoints {
  let endpoints = endpointSets.get(access);
  if (endpoints === undefined) {
    endpoints = controlPlaneEndpoints(access.url);
    endpointSets.set(access, endpoints);
  }
  return endpoints;
}

/**
 * One request to the control plane as the administrator, asked of its replicas in turn. A GET that
 * failed after it was sent is asked of the next replica; a POST (a scanner kit, a report) only when it
 * was not sent. Unreachable or refused: a ScanSetupError that says which call and why (the scan cannot run).
 */
async function asAdmin<T>(
  access: ControlPlaneAccess,
  method: 'GET' | 'POST',
  path: string,
  body?: unknown,
): Promise<T> {
  const endpoints = endpointsFor(access);
  let answered: JsonAnswer;
  try {
    answered = await callControlPlane(endpoints, access.trustDomain, access.admin, {
      method,
      path,
      body,
      deadlineMs: 40_000,
      attemptMs: 20_000,
    });
  } catch (error) {
    if (typeof (error as { status?: unknown }).status === 'number') throw new ScanSetupError((error as Error).message);
    throw new ScanSetupError(
      `cannot reach the control plane at ${endpoints.urls.join(', ')}: ${(error as Error).message}; is \`lockstep control-plane\` running?`,
    );
  }
  if (answered.status >= 400) throw new ScanSetupError(refusalOf({ method, path }, answered.status, answered.answer));
  return answered.answer as T;
}

export async function obtainScanKit(
  access: ControlPlaneAccess,
  name: string,
  users: readonly ScanUser[],
): Promise<ObtainedKit> {
  const keys = await crypto.subtle.generateKey({ name: 'ECDSA', namedCurve: 'P-256' }, true, ['sign', 'verify']);
  const scannerId = formatSpiffeId(access.trustDomain, 'scanner', name);
  const csr = await x509.Pkcs10CertificateRequestGenerator.create({
    keys,
    signingAlgorithm: { name: 'ECDSA', hash: 'SHA-256' },
    extensions: [new x509.SubjectAlternativeNameExtension([{ type: 'url', value: scannerId }])],
  });
  const kit = await asAdmin<ScanKit>(access, 'POST', '/v1/admin/scan-kit', { name, csr: csr.toString('pem'), users });
  const txnJwks = await asAdmin<ObtainedKit['txnJwks']>(access, 'GET', '/v1/txn-token/jwks.json');
  const keyPem = x509.PemConverter.encode(await crypto.subtle.exportKey('pkcs8', keys.privateKey), 'PRIVATE KEY');
  return { kit, keyPem, privateKey: keys.privateKey, txnJwks };
}

/** The registry's list (administrators may read it). */
export async function registeredServices(access: ControlPlaneAccess): Promise<RegisteredService[]> {
  const answer = await asAdmin<{ services?: RegisteredService[] }>(access, 'GET', '/v1/services');
  if (!Array.isArray(answer.services))
    throw new ScanSetupError(
      `GET /v1/services answered without a service list: is ${endpointsFor(access).urls.join(', ')} a Lockstep control plane?`,
    );
  return answer.services;
}

/** Sends a finished scan to the monitor's Scans page (`POST /v1/scans`). */
export async function sendScanReport(access: ControlPlaneAccess, report: ScanReport): Promise<void> {
  await asAdmin(access, 'POST', '/v1/scans', report);
}

/** A registry entry as `GET /v1/services` answers it. */
export type RegisteredService = ServiceRecord & { readonly stale: boolean };
