/** The caller's workload identity from the mTLS handshake, for endpoints that need one. */
import { X509Certificate } from 'node:crypto';
import type { TLSSocket } from 'node:tls';
import { ControlPlaneError } from '../errors.ts';

const URI_SAN = /^URI:(spiffe:\/\/[^,\s]+)$/;

export function peerSpiffeId(socket: TLSSocket, trustDomain: string): string {
  const peer = socket.getPeerCertificate(false);
  if (!peer || !peer.raw) throw new ControlPlaneError('LOCKSTEP_CP_PEER_UNAUTHENTICATED', 'no client certificate');
  if (!socket.authorized) throw new ControlPlaneError('LOCKSTEP_CP_PEER_UNAUTHENTICATED', String(socket.authorizationError ?? 'certificate not trusted'));
  const cert = new X509Certificate(peer.raw);
  const sans = (cert.subjectAltName ?? '').split(', ').filter(Boolean);
  const match = sans.length === 1 ? URI_SAN.exec(sans[0] as string) : null;
  if (match === null) throw new ControlPlaneError('LOCKSTEP_CP_PEER_UNAUTHENTICATED', 'an SVID has exactly one URI SAN');
  const id = match[1] as string;
  if (!id.startsWith(`spiffe://${trustDomain}/`)) throw new ControlPlaneError('LOCKSTEP_CP_PEER_UNAUTHENTICATED', `${id} is not in ${trustDomain}`);
  return id;
}
