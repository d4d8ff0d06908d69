/**
 * Recovery after expiry: a workload whose SVID expired while no control plane was reachable gets a
 * new one without a join token, by presenting the expired SVID in the TLS handshake of
 * `POST /v1/recover`.
 *
 * The credential is the workload's newest SVID and its private key, which the agent keeps in memory
 * only. The TLS handshake proves possession of the key (the client signs the handshake with it), so
 * no other secret exists and nothing lies on disk. It is accepted when:
 *
 *   1. its chain leads to a root of the bundle (current, next or retiring), checked here at a time
 *      within its validity; the leaf follows the X509-SVID rules and names a workload of this domain;
 *   2. it expired (or expires within a minute), at most `windowSeconds` ago (default 7 days; 0: off);
 *   3. its SPIFFE ID is not revoked (read from the store: every replica's revocations count), and it
 *      was issued after the latest revocation of that ID: lifting a revocation brings back the workload,
 *      not the SVIDs from before it;
 *   4. it was neither renewed, recovered nor retired (its workload stopped cleanly) before — read first,
 *      so that a spent SVID is refused before anything is signed — or it was, for the very key this CSR
 *      carries and whose certificate is not in use (a retry after a lost answer: a failover abandoned the
 *      attempt, or a renewal's answer was lost as the outage began): then it is served again, a fresh
 *      certificate for the same key. One statement records the successor and its key (`svid_successions`,
 *      primary key on the serial), so that it is spent once, across replicas.
 *
 * Threat model (docs/threat-model.md): a thief who copied the key and SVID out of the workload's
 * memory can recover only by being first; the loser — the thief or the workload — is refused and the
 * `svid-recovery-reuse` alert fires. A retry for the successor key proves that key (the CSR is signed
 * with it), which the agent generated and never sent: only the workload that asked first can retry.
 * Exposure grows from one SVID lifetime to the window, for workloads that were cut off and for those that
 * crashed (a clean stop retires the SVID; a crash leaves it unspent, so a key copied earlier recovers
 * uncontested until the window ends: set a shorter `--svid-recovery-window` where that matters). A
 * renewed SVID recovers only to its renewal's key (renewal spends it too). A restarted process has lost
 * its key and joins again: no credential at rest. Revocation always wins.
 */
import { X509Certificate } from 'node:crypto';
import { DEFAULT_MAX_SVID_LIFETIME_SECONDS, readCaPathFacts, readX509Svid, SvidError } from '@lockstep/identity';
import { ControlPlaneError } from '../errors.ts';
import type { ControlPlaneStore, SvidSuccession } from '../store/store.ts';
import { checkCsr, issueSvidFromCsr, publicKeyHash, spiffeIdFor, type IssuedSvid } from './issue-svid.ts';
import type { WorkloadCa } from './workload-ca.ts';

/** The default recovery window: a week-long outage (a long weekend and then some) is recovered from. */
export const DEFAULT_RECOVERY_WINDOW_SECONDS = 7 * 86_400;
/** An SVID this close to expiry may recover rather than renew: the agent's clock may be off. */
const EARLY_MS = 60_000;

export interface RecoveryRequest {
  /** The leaf the client presented in the handshake (DER), or null. */
  readonly leafDer: Uint8Array | null;
  /** The intermediate it sent with it (DER), or null: then this CA's own intermediate is tried. */
  readonly intermediateDer: Uint8Array | null;
  readonly csrPem: string;
  readonly windowSeconds: number;
  readonly ttlSeconds?: number;
}

export interface RecoveryOutcome {
  readonly svid: IssuedSvid;
  /** The serial of the expired SVID it replaces. */
  readonly recoveredSerial: string;
}

/**
 * Raised when an SVID is presented for recovery after it was spent, other than as a retry for its
 * successor's key: `svid-recovery-reuse`. `via: 'retire'`: its workload had stopped cleanly (no successor).
 */
export interface RecoveryReuse {
  readonly spiffeId: string;
  readonly serial: string;
  readonly successor: string;
  readonly via: SvidSuccession['via'];
  readonly spentAt: number;
}

export async function recoverWorkload(
  store: ControlPlaneStore,
  ca: WorkloadCa,
  request: RecoveryRequest,
  onReuse: (reuse: RecoveryReuse) => void = () => {},
): Promise<RecoveryOutcome> {
  if (request.windowSeconds <= 0)
    throw new ControlPlaneError('LOCKSTEP_CP_RECOVERY_REFUSED', 'recovery is turned off on this control plane');
  if (request.leafDer === null)
    throw new ControlPlaneError('LOCKSTEP_CP_PEER_UNAUTHENTICATED', 'present the expired SVID as client certificate');
  const leaf = parseCertificate(request.leafDer, 'the client certificate');
  const notAfter = Date.parse(leaf.validTo);
  const now = ca.now();
  // Its own code: an agent whose clock runs ahead asks again later, it is not refused for good.
  if (notAfter - now > EARLY_MS)
    throw new ControlPlaneError('LOCKSTEP_CP_RECOVERY_EARLY', `it is valid until ${new Date(notAfter).toISOString()}`);
  if (now - notAfter > request.windowSeconds * 1000)
    throw new ControlPlaneError(
      'LOCKSTEP_CP_RECOVERY_EXPIRED',
      `it expired at ${new Date(notAfter).toISOString()}, and this control plane recovers SVIDs for ${request.windowSeconds} s after expiry`,
    );
  // Every rule checked as of one second before expiry: the time it was last valid.
  const asOf = notAfter - 1000;
  let service: string | null;
  try {
    service = readX509Svid(request.leafDer, {
      trustDomain: ca.trustDomain,
      maxLifetimeSeconds: DEFAULT_MAX_SVID_LIFETIME_SECONDS,
      now: asOf,
    }).service;
  } catch (error) {
    if (error instanceof SvidError)
      throw new ControlPlaneError('LOCKSTEP_CP_RECOVERY_REFUSED', `${error.detail} (${error.code})`);
    throw error;
  }
  if (service === null)
    throw new ControlPlaneError('LOCKSTEP_CP_RECOVERY_REFUSED', 'only workloads (spiffe://<td>/svc/<name>) recover');
  verifyChain(ca, leaf, request.intermediateDer, asOf);
  const spiffeId = spiffeIdFor(ca.trustDomain, service);
  await refuseRevoked(store, spiffeId, leaf);
  const serial = leaf.serialNumber.toLowerCase();
  const reuse = (spent: SvidSuccession) => refuseReuse({ spiffeId, serial, spent }, onReuse);
  // A cheap read first: a spent SVID is refused before anything is signed, unless this is a retry.
  const earlier = await store.svidSuccession(serial);
  if (earlier !== null && !(await isRetry(store, earlier, request.csrPem, spiffeId))) reuse(earlier);
  // Signed before it is spent, as a join token is: a refused CSR leaves the SVID recoverable.
  const svid = await issueSvidFromCsr(ca, {
    csrPem: request.csrPem,
    service,
    ...(request.ttlSeconds === undefined ? {} : { ttlSeconds: request.ttlSeconds }),
  });
  // Atomic across replicas: of two recoveries at once, the first wins, and a second for the same key is served too.
  const spent = await store.spendSvid({
    serial,
    successor: svid.serial,
    successorKey: svid.publicKeyHash,
    at: now,
    via: 'recover',
  });
  if (spent !== null) reuse(spent);
  await store.recordIssuedSvid({
    serial: svid.serial,
    spiffeId: svid.spiffeId,
    issuedAt: now,
    expiresAt: svid.notAfter.getTime(),
    via: 'recover',
  });
  return { svid, recoveredSerial: serial };
}

/**
 * Revoked now: refused as such. Revoked after this SVID was issued and lifted since: refused too, for
 * good — a lift brings back the workload (its renewals, a new join), not SVIDs that were stopped.
 */
async function refuseRevoked(store: ControlPlaneStore, spiffeId: string, leaf: X509Certificate): Promise<void> {
  const revocation = await store.revocation('spiffeId', spiffeId);
  if (revocation === null) return;
  if (revocation.lifted === null) throw new ControlPlaneError('LOCKSTEP_CP_WORKLOAD_REVOKED', spiffeId);
  if (Date.parse(leaf.validFrom) < revocation.at)
    throw new ControlPlaneError(
      'LOCKSTEP_CP_RECOVERY_REFUSED',
      `this SVID was issued before ${spiffeId} was revoked (${new Date(revocation.at).toISOString()}); the ` +
        'revocation was lifted since, which does not bring back SVIDs from before it: join again',
    );
}

/**
 * A retry after a lost answer: the CSR is for the successor key recorded when the SVID was spent, and
 * the certificate issued for it is not in use (nobody renewed or recovered it: its answer was lost).
 */
async function isRetry(
  store: ControlPlaneStore,
  earlier: SvidSuccession,
  csrPem: string,
  spiffeId: string,
): Promise<boolean> {
  if (earlier.via === 'retire' || earlier.successorKey === null) return false;
  let key: string;
  try {
    key = publicKeyHash(checkCsr(csrPem, spiffeId));
  } catch (error) {
    if (error instanceof ControlPlaneError) return false;
    throw error;
  }
  return key === earlier.successorKey && (await store.svidSuccession(earlier.successor)) === null;
}

/** A spent SVID presented again, not as a retry: someone else holds its key (`svid-recovery-reuse`). */
function refuseReuse(
  { spiffeId, serial, spent }: { spiffeId: string; serial: string; spent: SvidSuccession },
  onReuse: (reuse: RecoveryReuse) => void,
): never {
  onReuse({ spiffeId, serial, successor: spent.successor, via: spent.via, spentAt: spent.at });
  const at = new Date(spent.at).toISOString();
  if (spent.via === 'retire')
    throw new ControlPlaneError(
      'LOCKSTEP_CP_RECOVERY_REFUSED',
      `this SVID was retired at ${at}: its workload stopped cleanly, and a stopped instance does not recover. ` +
        'If it did not stop, someone else holds its key: revoke it',
    );
  throw new ControlPlaneError(
    'LOCKSTEP_CP_RECOVERY_REFUSED',
    `this SVID was ${spent.via === 'renew' ? 'renewed' : 'recovered'} already at ${at}: ` +
      'an SVID recovers once. If this workload did not do it, someone else holds its key: revoke it',
  );
}

/**
 * leaf ← intermediate ← a root of the bundle, signatures and issuer names, at `asOf`; the intermediate
 * must be a CA whose path rules we understand. Any doubt refuses.
 */
function verifyChain(ca: WorkloadCa, leaf: X509Certificate, intermediateDer: Uint8Array | null, asOf: number): void {
  const refuse = (why: string): never => {
    throw new ControlPlaneError('LOCKSTEP_CP_RECOVERY_REFUSED', `${why}: it was not issued by this control plane's CA`);
  };
  const intermediate =
    intermediateDer === null ? new X509Certificate(ca.intermediatePem) : parseCertificate(intermediateDer, 'the chain');
  if (!intermediate.ca) refuse('the certificate above the leaf is not a CA');
  const facts = readCaPathFacts(new Uint8Array(intermediate.raw));
  if (facts.nameConstrained || facts.unhandledCritical.length > 0 || facts.pathLength !== 0)
    refuse('the intermediate has path rules this control plane does not issue');
  if (!within(intermediate, asOf)) refuse('the intermediate was not valid when the SVID was');
  if (!leaf.checkIssued(intermediate) || !leaf.verify(intermediate.publicKey)) refuse('the leaf signature');
  const roots = bundleCertificates(ca.bundlePem);
  const root = roots.find(
    (candidate) => intermediate.checkIssued(candidate) && intermediate.verify(candidate.publicKey),
  );
  if (root === undefined) refuse('no root of the trust bundle signed its intermediate');
}

function within(certificate: X509Certificate, at: number): boolean {
  return Date.parse(certificate.validFrom) <= at && at <= Date.parse(certificate.validTo);
}

function parseCertificate(der: Uint8Array, what: string): X509Certificate {
  try {
    return new X509Certificate(der);
  } catch {
    throw new ControlPlaneError('LOCKSTEP_CP_RECOVERY_REFUSED', `${what} is not an X.509 certificate`);
  }
}

function bundleCertificates(pem: string): X509Certificate[] {
  return (pem.match(/-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g) ?? []).map(
    (block) => new X509Certificate(block),
  );
}
