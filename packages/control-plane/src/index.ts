export { ControlPlaneError, CONTROL_PLANE_ERRORS, type ControlPlaneErrorCode } from './errors.ts';
export type { ControlPlaneStore, JoinTokenRecord, IssuedSvidRecord, RevocationKind, RevocationRecord, RedeemOutcome } from './store/store.ts';
export { openSqliteStore } from './store/sqlite-store.ts';
export { openPostgresStore, type PostgresStoreOptions } from './store/postgres-store.ts';
export { openWorkloadCa, hashBundle, type WorkloadCa, type WorkloadCaOptions } from './ca/workload-ca.ts';
export { issueSvidFromCsr, spiffeIdFor, type IssuedSvid, type IssueSvidRequest } from './ca/issue-svid.ts';
export { createJoinToken, redeemJoinToken, pinnedBundleHash, type CreatedJoinToken, type CreateJoinTokenRequest } from './ca/join-tokens.ts';
export { KeyPermissionError } from './ca/key-files.ts';
export { bootstrapWorkload, renewWorkload, type EnrolOptions } from './ca/enrol.ts';
