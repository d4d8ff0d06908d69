/**
 * Step 1 — transport. The caller is the workload named by its verified client certificate: the chain
 * was verified against the trust bundle by TLS (we ask for the certificate but read
 * `socket.authorized` ourselves so that the refusal is an HTTP answer with an audit event), and the
 * identity is read from the DER by @lockstep/identity with the X509-SVID leaf rules (CA=false,
 * critical key usage with digitalSignature and without keyCertSign/cRLSign, exactly one URI SAN, a
 * SPIFFE ID with a path in our trust domain, a bounded lifetime) — never from a string rendering.
 * The result is computed once per connection; per request it costs a WeakMap lookup, an expiry check
 * and a revocation lookup.
 */
import type { Socket } from 'node:net';
import type { TLSSocket } from 'node:tls';
import {
  DEFAULT_MAX_SVID_LIFETIME_SECONDS,
  readTlsPeer,
  readX509Svid,
  SvidError,
  type SvidErrorCode,
} from '@lockstep/identity';
import { GuardError, type GuardErrorCode } from '../errors.ts';

export interface PeerIdentity {
  readonly spiffeId: string;
  /** `<name>` of `spiffe://<td>/svc/<name>`, or "" for other paths. */
  readonly service: string;
  readonly notAfterMs: number;
  /**
   * A scanner identity (`spiffe://<td>/scanner/<name>`, issued by the control plane to `lockstep scan`):
   * its requests are decided like any other, but never reach a handler (see the pipeline's probes).
   */
  readonly scanner: boolean;
}

export interface TransportStep {
  identify(socket: Socket): PeerIdentity;
}

export interface TransportOptions {
  trustDomain: string;
  isRevokedSpiffeId(id: string): boolean;
  /** The longest SVID a peer may present (notAfter − notBefore); default 24 h. */
  maxSvidLifetimeSeconds?: number;
  now?: () => number;
}

const UNTRUSTED_CHAIN_ERRORS = new Set(['CERT_HAS_EXPIRED', 'CERT_NOT_YET_VALID']);

export function createTransportStep(options: TransportOptions): TransportStep {
  const byConnection = new WeakMap<Socket, PeerIdentity>();
  const now = options.now ?? Date.now;

  function establish(socket: TLSSocket): PeerIdentity {
    const peer = readTlsPeer(socket);
    if (peer.leafDer === null) throw new GuardError('LOCKSTEP_ERR_PEER_CERT_MISSING');
    if (!peer.authorized) {
      const reason = peer.authorizationError ?? 'unverified';
      throw new GuardError(
        'LOCKSTEP_ERR_PEER_UNTRUSTED',
        UNTRUSTED_CHAIN_ERRORS.has(reason)
          ? `certificate ${reason === 'CERT_HAS_EXPIRED' ? 'expired' : 'not yet valid'} (${reason})`
          : `certificate chain not trusted (${reason})`,
      );
    }
    return identityFromCertificate(peer.leafDer, options.trustDomain, options.maxSvidLifetimeSeconds);
  }

  return {
    identify(socket) {
      let identity = byConnection.get(socket);
      if (identity === undefined) {
        if ((socket as TLSSocket).encrypted !== true) {
          throw new GuardError('LOCKSTEP_ERR_PEER_CERT_MISSING', 'connection is not TLS');
        }
        identity = establish(socket as TLSSocket);
        byConnection.set(socket, identity);
      }
      // A keep-alive connection can outlive its certificate: re-check on every request.
      if (now() >= identity.notAfterMs)
        throw new GuardError('LOCKSTEP_ERR_PEER_UNTRUSTED', 'certificate expired during the connection');
      if (options.isRevokedSpiffeId(identity.spiffeId))
        throw new GuardError('LOCKSTEP_ERR_PEER_REVOKED', `${identity.spiffeId} is revoked`);
      return identity;
    },
  };
}

/**
 * What each X509-SVID rule's failure is in the guard's catalogue: a foreign trust domain keeps its
 * own code (lookalikes are worth telling apart in the audit trail); every other broken rule is an
 * invalid SVID, with the rule in the detail. A Record, so that a new rule cannot go unmapped.
 */
const REFUSAL_FOR: Readonly<Record<SvidErrorCode, GuardErrorCode>> = {
  SVID_FOREIGN_TRUST_DOMAIN: 'LOCKSTEP_ERR_PEER_FOREIGN_TRUST_DOMAIN',
  SVID_VALIDITY: 'LOCKSTEP_ERR_PEER_UNTRUSTED',
  SVID_UNPARSABLE: 'LOCKSTEP_ERR_PEER_ID_INVALID',
  SVID_CA: 'LOCKSTEP_ERR_PEER_ID_INVALID',
  SVID_KEY_USAGE: 'LOCKSTEP_ERR_PEER_ID_INVALID',
  SVID_URI_SAN: 'LOCKSTEP_ERR_PEER_ID_INVALID',
  SVID_ID_INVALID: 'LOCKSTEP_ERR_PEER_ID_INVALID',
  SVID_NO_PATH: 'LOCKSTEP_ERR_PEER_ID_INVALID',
  SVID_LIFETIME: 'LOCKSTEP_ERR_PEER_ID_INVALID',
};

/**
 * The peer's identity from its leaf's DER under the X509-SVID rules of @lockstep/identity, or the
 * GuardError of the rule it breaks.
 */
export function identityFromCertificate(
  der: Uint8Array,
  trustDomain: string,
  maxLifetimeSeconds = DEFAULT_MAX_SVID_LIFETIME_SECONDS,
): PeerIdentity {
  let svid;
  try {
    svid = readX509Svid(der, { trustDomain, maxLifetimeSeconds });
  } catch (error) {
    if (error instanceof SvidError) throw new GuardError(REFUSAL_FOR[error.code], error.detail);
    throw error;
  }
  return Object.freeze({
    spiffeId: svid.spiffeId,
    service: svid.service ?? '',
    notAfterMs: svid.notAfterMs,
    // Any path under /scanner/ (not only /scanner/<name>): the restrictive reading, as before.
    scanner: svid.path.startsWith('/scanner/'),
  });
}
