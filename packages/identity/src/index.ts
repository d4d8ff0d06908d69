/**
 * @lockstep/identity — SPIFFE identities for every Lockstep package: SPIFFE IDs parsed and formatted
 * strictly, the X509-SVID leaf rules read from a certificate's DER, a TLS peer read once, and the
 * control plane's replicas in the order to ask them.
 */
export {
  formatSpiffeId,
  isValidTrustDomain,
  parseSpiffeId,
  SPIFFE_KINDS,
  trustDomainId,
  workloadId,
  type SpiffeId,
  type SpiffeKind,
} from './spiffe-id.ts';
export {
  DEFAULT_MAX_SVID_LIFETIME_SECONDS,
  readX509Svid,
  SvidError,
  type ReadX509SvidOptions,
  type SvidErrorCode,
  type X509SvidIdentity,
} from './x509-svid.ts';
export { readCaPathFacts, type CaPathFacts } from './ca-path.ts';
export { readTlsPeer, type TlsPeer } from './tls-peer.ts';
export { serverSvidCheck, type ServerIdentityCheck, type ServerSvidOptions } from './server-identity.ts';
export {
  controlPlaneEndpoints,
  isFailover,
  type ControlPlaneEndpoints,
  type ControlPlaneEndpointsOptions,
} from './endpoints.ts';
