export { ControlPlaneError, CONTROL_PLANE_ERRORS, type ControlPlaneErrorCode } from './errors.ts';
export type {
  ControlPlaneStore, JoinTokenRecord, IssuedSvidRecord, RevocationKind, RevocationRecord, RedeemOutcome, ServiceRecord, RegisteredRoute, UserRecord,
  AuditEntry, AuditBatch, StoredAuditEvent, AuditStream, AuditCheckpoint, AuditChainLink, AuditAppend, AlertRecord, ScanRunRecord, ScanRunSummary, ScanRecordOutcome,
} from './store/store.ts';
export { AUDIT_KEEP_ALIVE_MS, AUDIT_STREAM_SILENCE_MS, auditEntryHash, auditEventHash, auditTxnOf, GENESIS, type AuditHashInput } from './store/audit-chain.ts';
export { requireCaller, admittedCaller, admittedWorkload, callerOf, peerSpiffeId, type CallerKind } from './server/peer.ts';
export { refuse } from './server/refusal.ts';
export { openSqliteStore } from './store/sqlite-store.ts';
export { openPostgresStore, type PostgresStoreOptions } from './store/postgres-store.ts';
export { openWorkloadCa, hashBundle, RootRotationError, type WorkloadCa, type WorkloadCaOptions, type RootRotation, type RootStatus } from './ca/workload-ca.ts';
export { issueSvidFromCsr, spiffeIdFor, type IssuedSvid, type IssueSvidRequest } from './ca/issue-svid.ts';
export { createJoinToken, redeemJoinToken, pinnedBundleHash, type CreatedJoinToken, type CreateJoinTokenRequest } from './ca/join-tokens.ts';
export { KeyFileError, KeyPermissionError } from './ca/key-files.ts';
export { bootstrapWorkload, renewWorkload, type EnrolOptions } from './ca/enrol.ts';
export { startControlPlane, controlPlaneSpiffeId, type ControlPlaneServerOptions, type RunningControlPlane, type ExtensionContext, type ExtensionHooks } from './server/control-plane-server.ts';
export { joinControlPlane, renewWithControlPlane, EnrolmentError, type WorkloadCredentials } from './client/enrol-client.ts';
export { issueAdminCredentials, type AdminCredentials } from './ca/admin-credentials.ts';
export { ADMIN_CHANNEL, attachAdminTrail, subscribeAdminActions, type AdminEvent, type AdminTrailSink } from './admin/admin-audit.ts';
export { openSigningKey, type SigningKey } from './ca/signing-key.ts';
export { createPolicyService, type PolicyService, type PolicyServiceOptions, type PolicyChange } from './policy/policy-service.ts';
export { connectGuardStream, type GuardStream, type GuardStreamOptions, type StreamEvent, type StreamTarget } from './client/guard-stream.ts';
export { startRegistryHeartbeat, type Heartbeat, type HeartbeatOptions } from './client/registry-heartbeat.ts';
export { STALE_AFTER_MS, type UnreachableReport } from './server/registry-routes.ts';
export {
  createTxnTokenService, singleKey, TokenExchangeError, TOKEN_EXCHANGE_GRANT, MAX_TXN_TOKEN_REPLACEMENTS, type TxnTokenService, type TxnTokenServiceOptions, type TxnTokenKeys, type ExchangeRequest, type ExchangeResponse,
} from './tts/txn-token-service.ts';
export { createSubjectVerifier, discoverIssuer, TOKEN_TYPE, type SubjectIssuer, type SubjectVerifier } from './tts/subject-tokens.ts';
export { openKeyRing, type KeyRing, type KeyRingOptions, type Rotation } from './ca/key-ring.ts';
export { createIdentityProvider, openCookieKeys, subscribeLogins, IDP_PATH, type IdentityProvider, type IdentityProviderOptions, type LoginEvent, type ProtectedResource } from './idp/identity-provider.ts';
export { createUser, type NewUser } from './idp/users.ts';
export { hashPassword, verifyPassword, passwordProblem, generatePassword, PASSWORD_MIN_LENGTH } from './idp/passwords.ts';
export { DEFAULT_LOCKOUT, type LockoutPolicy } from './idp/lockout.ts';
export { DEFAULT_PASSWORD_CHECKS, type PasswordCheckLimits } from './idp/check-slots.ts';
export { joinAsWorkload, type WorkloadAgent, type WorkloadAgentOptions, type AgentEvent, type AttachableGuard } from './client/workload-agent.ts';
export { controlPlaneAgent } from './client/control-plane-agent.ts';
export type { ScanKit, ProbeCertificate, TestUserStatus } from './scan/scan-kit.ts';
export type { ScanUser, ScanTokens, DefectiveToken } from './tts/scan-tokens.ts';
