/**
 * Who is calling, from the mTLS handshake: one `onRequest` hook per endpoint says which kinds of
 * caller it takes, before the body is read; handlers then read the caller with `callerOf`. The
 * SVID is parsed once per connection; its expiry is checked on every request (a keep-alive
 * connection can outlive its certificate).
 */
import { X509Certificate } from 'node:crypto';
import type { TLSSocket } from 'node:tls';
import type { FastifyRequest } from 'fastify';
import { ControlPlaneError, type ControlPlaneErrorCode } from '../errors.ts';

/**
 * `workload`: spiffe://<td>/svc/<name>; `admin`: …/admin/<name>; `lockstep`: Lockstep's own components,
 * …/lockstep/<name>; `scanner`: a scanner identity, …/scanner/<name> (issued to `lockstep scan`).
 */
export type CallerKind = 'workload' | 'admin' | 'lockstep' | 'scanner';

const URI_SAN = /^URI:(spiffe:\/\/[^,\s]+)$/;
const PATHS: Record<CallerKind, string> = { workload: 'svc', admin: 'admin', lockstep: 'lockstep', scanner: 'scanner' };

type Identity = { readonly id: string; readonly notAfterMs: number } | ControlPlaneError;
const byConnection = new WeakMap<TLSSocket, Identity>();
const callers = new WeakMap<FastifyRequest, string>();

function identify(socket: TLSSocket, trustDomain: string): Identity {
  const peer = socket.getPeerCertificate(false);
  if (!peer || !peer.raw) return new ControlPlaneError('LOCKSTEP_CP_PEER_UNAUTHENTICATED', 'no client certificate: present your SVID');
  if (!socket.authorized) return new ControlPlaneError('LOCKSTEP_CP_PEER_UNAUTHENTICATED', `${String(socket.authorizationError ?? 'certificate not trusted')}: present an SVID issued by this control plane`);
  const cert = new X509Certificate(peer.raw);
  const sans = (cert.subjectAltName ?? '').split(', ').filter(Boolean);
  const match = sans.length === 1 ? URI_SAN.exec(sans[0] as string) : null;
  if (match === null) return new ControlPlaneError('LOCKSTEP_CP_PEER_UNAUTHENTICATED', 'an SVID has exactly one URI SAN');
  const id = match[1] as string;
  if (!id.startsWith(`spiffe://${trustDomain}/`)) return new ControlPlaneError('LOCKSTEP_CP_PEER_UNAUTHENTICATED', `${id} is not in ${trustDomain}`);
  return { id, notAfterMs: new Date(cert.validTo).getTime() };
}

/** The caller's SPIFFE ID, or a ControlPlaneError saying why there is none. */
export function peerSpiffeId(socket: TLSSocket, trustDomain: string): string {
  let identity = byConnection.get(socket);
  if (identity === undefined) byConnection.set(socket, identity = identify(socket, trustDomain));
  if (identity instanceof ControlPlaneError) throw identity;
  if (Date.now() >= identity.notAfterMs) throw new ControlPlaneError('LOCKSTEP_CP_PEER_UNAUTHENTICATED', 'the SVID expired during the connection: reconnect with a renewed one');
  return identity.id;
}

/**
 * An `onRequest` hook admitting only callers of `kinds`; others are refused with `refusal`. The
 * identified caller is remembered even when refused, for the audit event.
 */
export function requireCaller(trustDomain: string, kinds: readonly CallerKind[], refusal: ControlPlaneErrorCode = 'LOCKSTEP_CP_PEER_UNAUTHENTICATED') {
  const prefixes = kinds.map((kind) => `spiffe://${trustDomain}/${PATHS[kind]}/`);
  const wanted = kinds.map((kind) => `spiffe://${trustDomain}/${PATHS[kind]}/<name>`).join(' or ');
  return async (request: FastifyRequest): Promise<void> => {
    const id = peerSpiffeId(request.raw.socket as TLSSocket, trustDomain);
    callers.set(request, id);
    if (!prefixes.some((prefix) => id.startsWith(prefix))) throw new ControlPlaneError(refusal, `${id} may not call this endpoint; it takes ${wanted}`);
  };
}

/** The caller `requireCaller` identified for this request, or null. */
export function callerOf(request: FastifyRequest): string | null {
  return callers.get(request) ?? null;
}

/** The caller of an endpoint guarded by `requireCaller` (which has admitted it). */
export function admittedCaller(request: FastifyRequest): string {
  const id = callers.get(request);
  if (id === undefined) throw new TypeError('admittedCaller() on a route without requireCaller()');
  return id;
}
