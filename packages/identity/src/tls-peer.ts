/**
 * What a TLS server knows about its peer, read the same way everywhere: the leaf's DER (the input
 * of `readX509Svid`) and whether TLS verified its chain against the trust bundle. Servers ask for a
 * certificate without requiring one, so that a refusal is an answer with a code rather than a TLS
 * alert; they must then read `authorized` themselves — this is the one place that does.
 */
import type { TLSSocket } from 'node:tls';

export interface TlsPeer {
  /** DER of the peer's leaf certificate, or null when it presented none. */
  readonly leafDer: Uint8Array | null;
  /** True when TLS verified the peer's chain against the trust bundle (and its validity period). */
  readonly authorized: boolean;
  /** Why not, as OpenSSL says it (`CERT_HAS_EXPIRED`, `UNABLE_TO_VERIFY_LEAF_SIGNATURE`…), else null. */
  readonly authorizationError: string | null;
}

export function readTlsPeer(socket: TLSSocket): TlsPeer {
  const certificate = socket.getPeerCertificate(false) as { raw?: Buffer } | null;
  const raw = certificate?.raw;
  const leafDer = raw !== undefined && raw.length > 0 ? new Uint8Array(raw) : null;
  const authorized = leafDer !== null && socket.authorized === true;
  const reason = socket.authorizationError as unknown;
  return Object.freeze({
    leafDer,
    authorized,
    authorizationError: authorized ? null : reason === undefined || reason === null ? null : String(reason),
  });
}
