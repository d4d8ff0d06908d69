/**
 * Who is calling, from the mTLS handshake: one `onRequest` hook per endpoint says which kinds of
 * caller it takes, before the body is read; handlers then read the caller with `callerOf`. The
 * identity is read from the leaf's DER by @lockstep/identity, under the same X509-SVID leaf rules
 * as the guard's (CA=false, critical key usage with digitalSignature and without keyCertSign or
 * cRLSign, exactly one URI SAN, a SPIFFE ID with a path in our trust domain, at most 24 h) — never
 * from the certificate's text rendering. It is read once per connection; its expiry is checked on
 * every request (a keep-alive connection can outlive its certificate), and so is its revocation, by one
 * hook for the whole server (`refuseRevokedCallers`), so that no endpoint — the extensions' and the
 * identity provider's included — can forget it.
 *
 * One maximum lifetime for every kind of caller: everything this control plane issues lives at most
 * 24 h (workloads 1 h by default, administrators 8 h, scanners 1 h, its own server SVID 24 h, all
 * clamped by `signLeaf`), so no kind needs a longer one.
 */
import type { TLSSocket } from 'node:tls';
import type { FastifyRequest } from 'fastify';
import {
  DEFAULT_MAX_SVID_LIFETIME_SECONDS,
  parseSpiffeId,
  readTlsPeer,
  readX509Svid,
  SvidError,
  trustDomainId,
  type SpiffeKind,
} from '@lockstep/identity';
import { ControlPlaneError, type ControlPlaneErrorCode } from '../errors.ts';
import type { RevokedCallers } from './revoked-callers.ts';

declare module 'fastify' {
  interface FastifyContextConfig {
    /** The endpoint reads the store for the caller's revocation itself (see refuseRevokedCallers). */
    checksOwnRevocation?: boolean;
  }
}

/**
 * `workload`: spiffe://<td>/svc/<name>; `admin`: …/admin/<name>; `lockstep`: Lockstep's own components,
 * …/lockstep/<name>; `scanner`: a scanner identity, …/scanner/<name> (issued to `lockstep scan`).
 */
export type CallerKind = 'workload' | 'admin' | 'lockstep' | 'scanner';

const KIND_OF: Readonly<Record<CallerKind, SpiffeKind>> = {
  workload: 'svc',
  admin: 'admin',
  lockstep: 'lockstep',
  scanner: 'scanner',
};
const PRESENT = 'present an SVID issued by this control plane';

interface Caller {
  readonly id: string;
  /** The Lockstep kind of `spiffe://<td>/<kind>/<name>`, or null for any other path. */
  readonly kind: SpiffeKind | null;
  readonly notAfterMs: number;
}

const byConnection = new WeakMap<TLSSocket, Caller | ControlPlaneError>();
const callers = new WeakMap<FastifyRequest, string>();

function unauthenticated(detail: string): ControlPlaneError {
  return new ControlPlaneError('LOCKSTEP_CP_PEER_UNAUTHENTICATED', detail);
}

function identify(socket: TLSSocket, trustDomain: string): Caller | ControlPlaneError {
  const peer = readTlsPeer(socket);
  if (peer.leafDer === null) return unauthenticated('no client certificate: present your SVID');
  if (!peer.authorized) return unauthenticated(`${peer.authorizationError ?? 'certificate not trusted'}: ${PRESENT}`);
  try {
    const svid = readX509Svid(peer.leafDer, { trustDomain, maxLifetimeSeconds: DEFAULT_MAX_SVID_LIFETIME_SECONDS });
    return Object.freeze({ id: svid.spiffeId, kind: svid.kind, notAfterMs: svid.notAfterMs });
  } catch (error) {
    if (error instanceof SvidError) return unauthenticated(`${error.detail} (${error.code}): ${PRESENT}`);
    throw error;
  }
}

/** The connection's caller, identified on its first request; or why it has none. */
function connectionCaller(socket: TLSSocket, trustDomain: string): Caller | ControlPlaneError {
  let caller = byConnection.get(socket);
  if (caller === undefined) byConnection.set(socket, (caller = identify(socket, trustDomain)));
  return caller;
}

function peerCaller(socket: TLSSocket, trustDomain: string): Caller {
  const caller = connectionCaller(socket, trustDomain);
  if (caller instanceof ControlPlaneError) throw caller;
  if (Date.now() >= caller.notAfterMs) {
    throw unauthenticated('the SVID expired during the connection: reconnect with a renewed one');
  }
  return caller;
}

/** The caller's SPIFFE ID, or a ControlPlaneError saying why there is none. */
export function peerSpiffeId(socket: TLSSocket, trustDomain: string): string {
  return peerCaller(socket, trustDomain).id;
}

/**
 * An `onRequest` hook admitting only callers of `kinds`; others are refused with `refusal`. The
 * identified caller is remembered even when refused, for the audit event.
 */
export function requireCaller(
  trustDomain: string,
  kinds: readonly CallerKind[],
  refusal: ControlPlaneErrorCode = 'LOCKSTEP_CP_PEER_UNAUTHENTICATED',
) {
  const wanted = new Set(kinds.map((kind) => KIND_OF[kind]));
  const described = kinds.map((kind) => `${trustDomainId(trustDomain)}/${KIND_OF[kind]}/<name>`).join(' or ');
  return async (request: FastifyRequest): Promise<void> => {
    const caller = peerCaller(request.raw.socket as TLSSocket, trustDomain);
    callers.set(request, caller.id);
    if (caller.kind === null || !wanted.has(caller.kind)) {
      throw new ControlPlaneError(refusal, `${caller.id} may not call this endpoint; it takes ${described}`);
    }
  };
}

/**
 * An `onRequest` hook for the whole server, ahead of every endpoint's own: a caller whose SVID names a
 * revoked SPIFFE ID is refused (401 LOCKSTEP_CP_PEER_REVOKED) on every request, whatever it asks for.
 * A request without a valid SVID passes on to the endpoint, which decides whether it needs one (a
 * joining workload, a browser signing in do not). Routes whose `config.checksOwnRevocation` is set
 * read the store themselves and answer with their own code (renewal: LOCKSTEP_CP_WORKLOAD_REVOKED).
 */
export function refuseRevokedCallers(trustDomain: string, revoked: RevokedCallers) {
  return async (request: FastifyRequest): Promise<void> => {
    const caller = connectionCaller(request.raw.socket as TLSSocket, trustDomain);
    if (caller instanceof ControlPlaneError || !revoked.has(caller.id)) return;
    // Undefined for a path no route takes (the 404 handler), whatever the type says.
    const config: { checksOwnRevocation?: boolean } | undefined = request.routeOptions.config;
    if (config?.checksOwnRevocation === true) return;
    callers.set(request, caller.id);
    throw new ControlPlaneError(
      'LOCKSTEP_CP_PEER_REVOKED',
      `${caller.id} is revoked and may no longer call ` +
        'the control plane; a revocation is permanent: an administrator can issue a new identity under another name',
    );
  };
}

/**
 * The serial of the certificate the client presented (lower-case hex, as the CA writes it: what the
 * store spends), or null without one.
 */
export function peerSerial(socket: TLSSocket): string | null {
  return socket.getPeerX509Certificate()?.serialNumber.toLowerCase() ?? null;
}

/** The caller `requireCaller` (or the revocation check) identified for this request, or null. */
export function callerOf(request: FastifyRequest): string | null {
  return callers.get(request) ?? null;
}

/** The caller of an endpoint guarded by `requireCaller` (which has admitted it). */
export function admittedCaller(request: FastifyRequest): string {
  const id = callers.get(request);
  if (id === undefined) throw new TypeError('admittedCaller() on a route without requireCaller()');
  return id;
}

/** The service name of the workload `requireCaller(td, ['workload'])` admitted (`<name>` of …/svc/<name>). */
export function admittedWorkload(request: FastifyRequest): string {
  const service = parseSpiffeId(admittedCaller(request))?.service ?? null;
  if (service === null) throw new TypeError('admittedWorkload() on a route that admits callers other than workloads');
  return service;
}
