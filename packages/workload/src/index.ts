/**
 * @lockstep/workload — what a service needs to join the control plane and stay in step: join with a
 * one-time token, SVID renewal, the policy/revocation/trust-bundle stream, the registry heartbeat,
 * and Txn-Tokens for outbound calls. No server dependencies: a guarded service installs this, the
 * guard, Cedar, jose and undici.
 */
export {
  defaultWorkloadStateDir,
  joinAsWorkload,
  type AgentEvent,
  type AttachableGuard,
  type WorkloadAgent,
  type WorkloadAgentOptions,
  type WorkloadAgentState,
} from './workload-agent.ts';
export {
  requestTxnToken,
  type SubjectTokenKind,
  type TxnTokenEndpoint,
  type TxnTokenRequest,
  type WorkloadTxnTokenRequest,
} from './txn-token.ts';
export { signSelfSignedSubjectToken, type SelfSignedSubject } from './self-signed.ts';
export type { WorkloadRequestOptions } from './workload-client.ts';
export {
  joinControlPlane,
  recoverWithControlPlane,
  renewWithControlPlane,
  type SvidExchangeOptions,
  type WorkloadCredentials,
} from './enrol-client.ts';
export {
  connectGuardStream,
  type GuardStream,
  type GuardStreamOptions,
  type StreamEvent,
  type StreamTarget,
} from './guard-stream.ts';
export { startRegistryHeartbeat, type Heartbeat, type HeartbeatOptions } from './registry-heartbeat.ts';
export { controlPlaneAgent, type ControlPlaneAgentOptions, type ControlPlaneTls } from './control-plane-agent.ts';
export { withFailover, type ControlPlaneUrls, type FailoverOptions } from './failover.ts';
export { callControlPlane, refusalOf, type JsonAnswer, type JsonCall } from './json-call.ts';
export {
  EnrolmentError,
  TxnTokenError,
  WORKLOAD_ERROR_CODES,
  type EnrolmentErrorCode,
  type TxnTokenErrorCode,
  type WorkloadErrorCode,
} from './errors.ts';
export { controlPlaneSpiffeId, REVOCATION_LIFTS_HEADER, TOKEN_EXCHANGE_GRANT, TOKEN_TYPE } from './protocol.ts';
export { hashTrustBundle, readJoinToken, type JoinTokenParts } from './join-token.ts';
