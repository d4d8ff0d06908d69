/**
 * The two ways a workload gets an SVID, as the endpoints will call them: `bootstrapWorkload` spends a
 * join token (first certificate), `renewWorkload` needs the workload's current SVID, already verified
 * by the mTLS handshake (renewal). Both refuse a revoked workload and record what they issued.
 */
import { parseSpiffeId } from '@lockstep/identity';
import { ControlPlaneError } from '../errors.ts';
import type { ControlPlaneStore } from '../store/store.ts';
import { issueSvidFromCsr, spiffeIdFor, type IssuedSvid } from './issue-svid.ts';
import { redeemJoinToken } from './join-tokens.ts';
import type { WorkloadCa } from './workload-ca.ts';

export interface EnrolOptions {
  readonly ttlSeconds?: number;
}

export async function bootstrapWorkload(
  store: ControlPlaneStore,
  ca: WorkloadCa,
  request: { joinToken: string; service: string; csrPem: string } & EnrolOptions,
): Promise<IssuedSvid> {
  const spiffeId = spiffeIdFor(ca.trustDomain, request.service);
  // Revocation and the CSR's rules first, so that a refused request does not spend the token: the
  // certificate is signed before the token is redeemed, and never leaves this function unless it is.
  await refuseRevoked(store, spiffeId);
  const svid = await issueSvidFromCsr(ca, {
    csrPem: request.csrPem,
    service: request.service,
    ...ttl(request.ttlSeconds),
  });
  await redeemJoinToken(store, ca, request.joinToken, request.service);
  await record(store, ca, svid, 'join');
  return svid;
}

/** `peerSpiffeId` is the SPIFFE ID of the SVID the workload presented in the mTLS handshake. */
export async function renewWorkload(
  store: ControlPlaneStore,
  ca: WorkloadCa,
  /** `peerSerial`: the presented SVID's (lower-case hex, `peer.ts` peerSerial), spent by the renewal; null: none. */
  request: { peerSpiffeId: string; csrPem: string; peerSerial?: string | null } & EnrolOptions,
): Promise<IssuedSvid> {
  const peer = parseSpiffeId(request.peerSpiffeId);
  const service = peer?.trustDomain === ca.trustDomain ? peer.service : null;
  if (service === null) {
    const detail = `${request.peerSpiffeId} is not a workload of ${ca.trustDomain}`;
    throw new ControlPlaneError('LOCKSTEP_CP_CSR_INVALID', detail);
  }
  await refuseRevoked(store, spiffeIdFor(ca.trustDomain, service));
  const svid = await issueSvidFromCsr(ca, { csrPem: request.csrPem, service, ...ttl(request.ttlSeconds) });
  // The renewed SVID is spent: it can recover only to this key (recover.ts), so that a recovery after a
  // renewal whose answer was lost, retried with the same key, is served. A renewal retried after a lost
  // answer finds it spent already and is served again, as before.
  if (request.peerSerial)
    await store.spendSvid({
      serial: request.peerSerial,
      successor: svid.serial,
      successorKey: svid.publicKeyHash,
      at: ca.now(),
      via: 'renew',
    });
  await record(store, ca, svid, 'renew');
  return svid;
}

async function refuseRevoked(store: ControlPlaneStore, spiffeId: string): Promise<void> {
  if (await store.isRevoked('spiffeId', spiffeId))
    throw new ControlPlaneError('LOCKSTEP_CP_WORKLOAD_REVOKED', spiffeId);
}

function ttl(ttlSeconds: number | undefined): { ttlSeconds?: number } {
  return ttlSeconds === undefined ? {} : { ttlSeconds };
}

async function record(
  store: ControlPlaneStore,
  ca: WorkloadCa,
  svid: IssuedSvid,
  via: 'join' | 'renew',
): Promise<void> {
  await store.recordIssuedSvid({
    serial: svid.serial,
    spiffeId: svid.spiffeId,
    issuedAt: ca.now(),
    expiresAt: svid.notAfter.getTime(),
    via,
  });
}
