export { ControlPlaneError, CONTROL_PLANE_ERRORS, type ControlPlaneErrorCode } from './errors.ts';
export type {
  ControlPlaneStore,
  JoinTokenRecord,
  IssuedSvidRecord,
  SvidSuccession,
  RevocationKind,
  RevocationRecord,
  RedeemOutcome,
  ServiceRecord,
  RegisteredRoute,
  UserRecord,
  AuditEntry,
  AuditBatch,
  StoredAuditEvent,
  AuditStream,
  AuditCheckpoint,
  AuditChainLink,
  AuditAppend,
  AlertRecord,
  ScanRunRecord,
  ScanRunSummary,
  ScanRecordOutcome,
} from './store/store.ts';
export {
  AUDIT_KEEP_ALIVE_MS,
  AUDIT_STREAM_SILENCE_MS,
  auditEntryHash,
  auditEventHash,
  auditTxnOf,
  GENESIS,
  type AuditHashInput,
} from './store/audit-chain.ts';
export {
  requireCaller,
  admittedCaller,
  admittedWorkload,
  callerOf,
  peerSpiffeId,
  type CallerKind,
} from './server/peer.ts';
export { refuse } from './server/refusal.ts';
export { openSqliteStore } from './store/sqlite-store.ts';
export { openPostgresStore, type PostgresStoreOptions } from './store/postgres-store.ts';
export {
  openWorkloadCa,
  hashBundle,
  RootRotationError,
  type WorkloadCa,
  type WorkloadCaOptions,
  type RootRotation,
  type RootStatus,
} from './ca/workload-ca.ts';
export { issueSvidFromCsr, spiffeIdFor, type IssuedSvid, type IssueSvidRequest } from './ca/issue-svid.ts';
export {
  createJoinToken,
  redeemJoinToken,
  pinnedBundleHash,
  type CreatedJoinToken,
  type CreateJoinTokenRequest,
} from './ca/join-tokens.ts';
export { KeyFileError, KeyPermissionError } from './ca/key-files.ts';
export { bootstrapWorkload, renewWorkload, type EnrolOptions } from './ca/enrol.ts';
export {
  DEFAULT_RECOVERY_WINDOW_SECONDS,
  recoverWorkload,
  type RecoveryOutcome,
  type RecoveryRequest,
  type RecoveryReuse,
} from './ca/recover.ts';
export {
  startControlPlane,
  type ControlPlaneServerOptions,
  type RunningControlPlane,
  type ExtensionContext,
  type ExtensionHooks,
} from './server/control-plane-server.ts';
export type { AdminActions } from './server/admin-routes.ts';
export { issueAdminCredentials, type AdminCredentials } from './ca/admin-credentials.ts';
export {
  ADMIN_CHANNEL,
  attachAdminTrail,
  subscribeAdminActions,
  type AdminEvent,
  type AdminTrailSink,
} from './admin/admin-audit.ts';
export { openSigningKey, type SigningKey } from './ca/signing-key.ts';
export { fileKeyVault, toKeyVault, type KeyDocument, type KeyVault } from './ca/key-vault.ts';
export { createKekText, KekError, parseKek, readKek, type Kek, type KekErrorCode } from './ca/kek.ts';
export { KeyDocumentError } from './ca/sealed.ts';
export {
  rewrapKeyDocuments,
  sealedKeyVault,
  type KeyRewrap,
  type SealedKeyVaultOptions,
} from './ca/sealed-key-vault.ts';
export { VAULT_GENERATIONS_FILE, type GenerationsFile } from './ca/vault-generations.ts';
export { importKeyFiles, MOVED_NOTE, type KeyImport } from './ca/import-keys.ts';
export {
  createPolicyService,
  type PolicyService,
  type PolicyServiceOptions,
  type PolicyChange,
} from './policy/policy-service.ts';
export { STALE_AFTER_MS, type UnreachableReport } from './server/registry-routes.ts';
export {
  createTxnTokenService,
  singleKey,
  TokenExchangeError,
  MAX_TXN_TOKEN_REPLACEMENTS,
  type TxnTokenService,
  type TxnTokenServiceOptions,
  type TxnTokenKeys,
  type ExchangeRequest,
  type ExchangeResponse,
} from './tts/txn-token-service.ts';
export {
  createSubjectVerifier,
  discoverIssuer,
  type SubjectIssuer,
  type SubjectVerifier,
} from './tts/subject-tokens.ts';
export { openKeyRing, type KeyRing, type KeyRingOptions, type Rotation } from './ca/key-ring.ts';
export {
  createIdentityProvider,
  openCookieKeys,
  subscribeLogins,
  IDP_PATH,
  type IdentityProvider,
  type IdentityProviderOptions,
  type LoginEvent,
  type ProtectedResource,
} from './idp/identity-provider.ts';
export { createUser, type NewUser } from './idp/users.ts';
export {
  hashPassword,
  verifyPassword,
  passwordProblem,
  generatePassword,
  PASSWORD_MIN_LENGTH,
} from './idp/passwords.ts';
export { DEFAULT_LOCKOUT, type LockoutPolicy } from './idp/lockout.ts';
export { DEFAULT_PASSWORD_CHECKS, type PasswordCheckLimits } from './idp/check-slots.ts';
export type { ScanKit, ProbeCertificate, TestUserStatus } from './scan/scan-kit.ts';
export type { ScanUser, ScanTokens, DefectiveToken } from './tts/scan-tokens.ts';
// What the control plane and its clients both spell (its SPIFFE ID, the token exchange's names) and the one way to
// connect to it: defined in @lockstep/workload, which the control plane depends on.
export { controlPlaneAgent, controlPlaneSpiffeId, TOKEN_EXCHANGE_GRANT, TOKEN_TYPE } from '@lockstep/workload';
/**
 * @deprecated The workload side moved to @lockstep/workload, which a service installs without this
 * package's server dependencies: import these from there. Re-exported here so that older imports still work.
 */
export {
  joinAsWorkload,
  joinControlPlane,
  renewWithControlPlane,
  connectGuardStream,
  startRegistryHeartbeat,
  EnrolmentError,
  type WorkloadAgent,
  type WorkloadAgentOptions,
  type AgentEvent,
  type AttachableGuard,
  type WorkloadCredentials,
  type GuardStream,
  type GuardStreamOptions,
  type StreamEvent,
  type StreamTarget,
  type Heartbeat,
  type HeartbeatOptions,
} from '@lockstep/workload';
