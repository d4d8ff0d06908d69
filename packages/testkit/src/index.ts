/**
 * @lockstep/testkit — for tests and examples only, never for production: a throw-away workload
 * CA, a Txn-Token minter, a catalogue of malicious Txn-Tokens, mTLS client helpers, and a TCP relay
 * that cuts the network.
 */
export { createTestCa } from './ca/create-test-ca.ts';
export type { TestCa, TestCaOptions } from './ca/create-test-ca.ts';
// Signs with another CA's key, e.g. a real control plane's (its WorkloadCa signer): identities a test needs without the API that issues them.
export { issueCertificate } from './ca/issue-cert.ts';
export type {
  CertificateSigner,
  ExtendedKeyUsageName,
  IssueCertOptions,
  IssuedCert,
  KeyUsageName,
} from './ca/issue-cert.ts';
export type { IssueSvidOptions, Svid } from './ca/issue-svid.ts';

export { createTxnTokenMinter } from './txn-token/create-minter.ts';
export type { MintOptions, TxnTokenMinter, TxnTokenMinterOptions } from './txn-token/create-minter.ts';
export { MAX_TXN_TOKEN_LIFETIME_SECONDS } from './txn-token/claims.ts';
export type { ClaimsOptions, TxnClaims, TxnClaimsInput } from './txn-token/claims.ts';

export { txnTokenAttacks } from './attacks/txn-token.ts';
export type { AttackSignature, TxnTokenAttack, TxnTokenRejection } from './attacks/txn-token.ts';
export { revokedKeyMinter, revokedKidToken } from './attacks/revoked-kid.ts';
export type { RevokedKidToken } from './attacks/revoked-kid.ts';

export { createMtlsClient } from './client/mtls-client.ts';
export type { MtlsClient, MtlsClientOptions, MtlsRequestOptions, MtlsResponse } from './client/mtls-client.ts';
export { rawTlsRequest } from './client/raw-tls-request.ts';
export type { RawTlsRequestOptions, RawTlsResult } from './client/raw-tls-request.ts';

export { createTestBrowser } from './browser/test-browser.ts';
export type { Page, TestBrowser, TestBrowserOptions } from './browser/test-browser.ts';

export { testPostgres } from './postgres/test-postgres.ts';
export type { TestPostgres } from './postgres/test-postgres.ts';

export { startTcpRelay } from './network/tcp-relay.ts';
export type { TcpRelay, TcpRelayOptions, TcpTarget } from './network/tcp-relay.ts';

export { packageOf, packagesLoadedBy, RECORD_LOADS } from './runtime/loaded-packages.ts';
export type { LoadedPackage } from './runtime/loaded-packages.ts';
