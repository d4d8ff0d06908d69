/**
 * Step 1 — transport. The caller is the workload named by its verified client certificate: the chain
 * was verified against the trust bundle by TLS (we ask for the certificate but read
 * `socket.authorized` ourselves so that the refusal is an HTTP answer with an audit event), and the
 * SPIFFE ID is read from the DER SAN extension — never from a string rendering of the certificate.
 * The result is computed once per connection; per request it costs a WeakMap lookup, an expiry check
 * and a revocation lookup.
 */
import type { Socket } from 'node:net';
import type { TLSSocket } from 'node:tls';
// @peculiar/x509 loads tsyringe, which needs the Reflect metadata polyfill first.
import 'reflect-metadata';
import * as x509 from '@peculiar/x509';
import { GuardError } from '../errors.ts';
import { parseSpiffeId } from '../spiffe-id.ts';

x509.cryptoProvider.set(globalThis.crypto);

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
  now?: () => number;
}

const UNTRUSTED_CHAIN_ERRORS = new Set([
  'CERT_HAS_EXPIRED',
  'CERT_NOT_YET_VALID',
]);

export function createTransportStep(options: TransportOptions): TransportStep {
  const byConnection = new WeakMap<Socket, PeerIdentity>();
  const now = options.now ?? Date.now;

  function establish(socket: TLSSocket): PeerIdentity {
    const peer = socket.getPeerCertificate(false);
    if (!peer || !peer.raw) throw new GuardError('LOCKSTEP_ERR_PEER_CERT_MISSING');
    if (!socket.authorized) {
      const reason = String(socket.authorizationError ?? 'unverified');
      throw new GuardError('LOCKSTEP_ERR_PEER_UNTRUSTED', UNTRUSTED_CHAIN_ERRORS.has(reason)
        ? `certificate ${reason === 'CERT_HAS_EXPIRED' ? 'expired' : 'not yet valid'} (${reason})`
        : `certificate chain not trusted (${reason})`);
    }
    return identityFromCertificate(peer.raw, options.trustDomain);
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
      if (now() >= identity.notAfterMs) throw new GuardError('LOCKSTEP_ERR_PEER_UNTRUSTED', 'certificate expired during the connection');
      if (options.isRevokedSpiffeId(identity.spiffeId)) throw new GuardError('LOCKSTEP_ERR_PEER_REVOKED', `${identity.spiffeId} is revoked`);
      return identity;
    },
  };
}

/** Reads the X.509-SVID rules from DER: CA=false, exactly one URI SAN, a well-formed SPIFFE ID in our trust domain. */
export function identityFromCertificate(der: Uint8Array, trustDomain: string): PeerIdentity {
  let cert: x509.X509Certificate;
  try {
    cert = new x509.X509Certificate(der);
  } catch {
    throw new GuardError('LOCKSTEP_ERR_PEER_ID_INVALID', 'certificate could not be parsed');
  }
  const basic = cert.getExtension(x509.BasicConstraintsExtension);
  if (basic?.ca) throw new GuardError('LOCKSTEP_ERR_PEER_ID_INVALID', 'a CA certificate was presented as a leaf');
  const san = cert.getExtension(x509.SubjectAlternativeNameExtension);
  const uris = (san?.names.items ?? []).filter((name) => name.type === 'url').map((name) => name.value);
  if (uris.length !== 1) throw new GuardError('LOCKSTEP_ERR_PEER_ID_INVALID', `an SVID has exactly one URI SAN; this certificate has ${uris.length}`);
  const uri = uris[0] as string;
  const spiffe = parseSpiffeId(uri);
  if (spiffe === null) throw new GuardError('LOCKSTEP_ERR_PEER_ID_INVALID', `URI SAN is not a well-formed SPIFFE ID: ${JSON.stringify(uri.slice(0, 200))}`);
  if (spiffe.trustDomain !== trustDomain) {
    throw new GuardError('LOCKSTEP_ERR_PEER_FOREIGN_TRUST_DOMAIN', `${spiffe.id} is not in trust domain ${trustDomain}`);
  }
  return Object.freeze({
    spiffeId: spiffe.id,
    service: spiffe.service ?? '',
    notAfterMs: cert.notAfter.getTime(),
    scanner: spiffe.path.startsWith('/scanner/'),
  });
}
