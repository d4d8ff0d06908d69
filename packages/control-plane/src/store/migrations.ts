/**
 * The schema, one numbered step at a time, in both dialects. A step is never edited once released:
 * a change is a new step. Both stores record the steps they applied in `lockstep_migrations`.
 */
export interface Migration {
  readonly version: number;
  readonly sqlite: string;
  readonly postgres: string;
}

export const MIGRATIONS: readonly Migration[] = [
  {
    version: 1,
    sqlite: `
      CREATE TABLE join_tokens (
        token_hash TEXT PRIMARY KEY, service TEXT NOT NULL, bundle_hash TEXT NOT NULL,
        created_at INTEGER NOT NULL, expires_at INTEGER NOT NULL, created_by TEXT NOT NULL, used_at INTEGER
      );
      CREATE TABLE issued_svids (
        serial TEXT PRIMARY KEY, spiffe_id TEXT NOT NULL, issued_at INTEGER NOT NULL,
        expires_at INTEGER NOT NULL, via TEXT NOT NULL CHECK (via IN ('join', 'renew'))
      );
      CREATE INDEX issued_svids_by_spiffe_id ON issued_svids (spiffe_id);
      CREATE TABLE revocations (
        seq INTEGER PRIMARY KEY AUTOINCREMENT, kind TEXT NOT NULL CHECK (kind IN ('sub', 'txn', 'spiffeId', 'kid')),
        value TEXT NOT NULL, reason TEXT NOT NULL, actor TEXT NOT NULL, at INTEGER NOT NULL, UNIQUE (kind, value)
      );`,
    postgres: `
      CREATE TABLE join_tokens (
        token_hash TEXT PRIMARY KEY, service TEXT NOT NULL, bundle_hash TEXT NOT NULL,
        created_at BIGINT NOT NULL, expires_at BIGINT NOT NULL, created_by TEXT NOT NULL, used_at BIGINT
      );
      CREATE TABLE issued_svids (
        serial TEXT PRIMARY KEY, spiffe_id TEXT NOT NULL, issued_at BIGINT NOT NULL,
        expires_at BIGINT NOT NULL, via TEXT NOT NULL CHECK (via IN ('join', 'renew'))
      );
      CREATE INDEX issued_svids_by_spiffe_id ON issued_svids (spiffe_id);
      CREATE TABLE revocations (
        seq BIGSERIAL PRIMARY KEY, kind TEXT NOT NULL CHECK (kind IN ('sub', 'txn', 'spiffeId', 'kid')),
        value TEXT NOT NULL, reason TEXT NOT NULL, actor TEXT NOT NULL, at BIGINT NOT NULL, UNIQUE (kind, value)
      );`,
  },
  {
    version: 2,
    sqlite: `
      CREATE TABLE services (
        spiffe_id TEXT PRIMARY KEY, service TEXT NOT NULL, routes TEXT NOT NULL, policy_version TEXT,
        svid_expires_at INTEGER NOT NULL, mode TEXT NOT NULL, guard_version TEXT NOT NULL,
        first_seen INTEGER NOT NULL, last_seen INTEGER NOT NULL
      );`,
    postgres: `
      CREATE TABLE services (
        spiffe_id TEXT PRIMARY KEY, service TEXT NOT NULL, routes TEXT NOT NULL, policy_version TEXT,
        svid_expires_at BIGINT NOT NULL, mode TEXT NOT NULL, guard_version TEXT NOT NULL,
        first_seen BIGINT NOT NULL, last_seen BIGINT NOT NULL
      );`,
  },
  {
    version: 3,
    // The identity provider: users (passwords as scrypt hashes), failed-login counters for lockout,
    // and oidc-provider's artefacts (sessions, interactions, codes, grants, refresh tokens).
    sqlite: `
      CREATE TABLE users (
        username TEXT PRIMARY KEY, password_hash TEXT NOT NULL, roles TEXT NOT NULL, tenant TEXT,
        created_at INTEGER NOT NULL, disabled_at INTEGER
      );
      CREATE TABLE login_failures (
        key TEXT PRIMARY KEY, failures INTEGER NOT NULL, last_failure_at INTEGER NOT NULL
      );
      CREATE TABLE oidc_models (
        model TEXT NOT NULL, id TEXT NOT NULL, payload TEXT NOT NULL, grant_id TEXT, user_code TEXT, uid TEXT,
        expires_at INTEGER, consumed_at INTEGER, PRIMARY KEY (model, id)
      );
      CREATE INDEX oidc_models_by_grant ON oidc_models (grant_id);
      CREATE INDEX oidc_models_by_uid ON oidc_models (model, uid);
      CREATE INDEX oidc_models_by_user_code ON oidc_models (model, user_code);
      CREATE INDEX oidc_models_by_expiry ON oidc_models (expires_at);`,
    postgres: `
      CREATE TABLE users (
        username TEXT PRIMARY KEY, password_hash TEXT NOT NULL, roles TEXT NOT NULL, tenant TEXT,
        created_at BIGINT NOT NULL, disabled_at BIGINT
      );
      CREATE TABLE login_failures (
        key TEXT PRIMARY KEY, failures INTEGER NOT NULL, last_failure_at BIGINT NOT NULL
      );
      CREATE TABLE oidc_models (
        model TEXT NOT NULL, id TEXT NOT NULL, payload TEXT NOT NULL, grant_id TEXT, user_code TEXT, uid TEXT,
        expires_at BIGINT, consumed_at BIGINT, PRIMARY KEY (model, id)
      );
      CREATE INDEX oidc_models_by_grant ON oidc_models (grant_id);
      CREATE INDEX oidc_models_by_uid ON oidc_models (model, uid);
      CREATE INDEX oidc_models_by_user_code ON oidc_models (model, user_code);
      CREATE INDEX oidc_models_by_expiry ON oidc_models (expires_at);`,
  },
];
