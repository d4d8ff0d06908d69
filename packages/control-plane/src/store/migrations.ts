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
];
