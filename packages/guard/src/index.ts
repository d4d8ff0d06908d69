export { createGuard, GUARD_VERSION, type Guard, type GuardStats, type GuardStatus } from './guard.ts';
export type { GuardOptions, GuardLogger, SvidPem, TxnTokenKeyOptions } from './options.ts';
export {
  GuardError,
  GuardConfigError,
  ERROR_HEADER,
  errorCatalogue,
  errorCodes,
  renderRefusal,
  REQUEST_ID_HEADER,
  statusOf,
  type GuardErrorCode,
  type RefusalResponse,
} from './errors.ts';
export { DECISION_CHANNEL, publishDecision, subscribeDecisions, type DecisionEvent } from './steps/audit.ts';
export {
  createProbeProof,
  PROBE_PROOF_HEADER,
  PROBE_PROOF_TYP,
  PROBE_TOKEN_MAX_SECONDS,
  PROBE_TOKEN_TYP,
  type ProbeProofRequest,
} from './steps/probe-proof.ts';
export { currentAdmission } from './context.ts';
export type { PresentedChain } from './steps/presented-chain.ts';
export type { Admission } from './pipeline.ts';
export {
  checkTxnClaims,
  MAX_TXN_TOKEN_REPLACEMENTS,
  parseTokenJson,
  type ClaimRules,
  type TxnTokenClaims,
} from './steps/txn-claims.ts';
export type { RouteConfig, RouteSecurity } from './routes.ts';
export type { RouteTable, TableRouteConfig } from './route-table.ts';
export type { GuardClient, OutboundRequestOptions } from './client.ts';
export { parseSpiffeId, workloadId, type SpiffeId } from '@lockstep/identity';
export type { Revocation, RevocationKind } from './revocations.ts';
export { ambiguousPath, TARGET_OVERRIDE_HEADERS, targetOverride } from './request-target.ts';
export { closeSilentConnections, FIRST_REQUEST_MS, HANDSHAKE_TIMEOUT_MS } from './silent-connections.ts';
export { createAuditFileSink, type AuditSink } from './audit-file-sink.ts';
export { createNetworkSink, type NetworkSink, type NetworkSinkOptions, type NetworkSinkStats } from './network-sink.ts';
export type { GuardMetrics, MetricsSource } from './metrics.ts';
