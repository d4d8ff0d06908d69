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
  {
    version: 4,
    // The audit trail: append-only per source (a guard's SPIFFE ID), each event hash-chained to the
    // previous one of its source; per shipping stream, the last sequence number seen and what the
    // sender dropped; signed checkpoints. Triggers refuse UPDATE and DELETE on the trail.
    sqlite: `
      CREATE TABLE audit_events (
        source TEXT NOT NULL, seq INTEGER NOT NULL, stream TEXT NOT NULL, stream_seq INTEGER NOT NULL, received_at INTEGER NOT NULL,
        event TEXT NOT NULL, txn TEXT, prev_hash TEXT NOT NULL, hash TEXT NOT NULL,
        PRIMARY KEY (source, seq), UNIQUE (source, stream, stream_seq)
      );
      CREATE INDEX audit_events_by_txn ON audit_events (txn);
      CREATE TABLE audit_streams (
        source TEXT NOT NULL, stream TEXT NOT NULL, last_stream_seq INTEGER NOT NULL, dropped INTEGER NOT NULL, gaps INTEGER NOT NULL,
        first_seen INTEGER NOT NULL, last_seen INTEGER NOT NULL, PRIMARY KEY (source, stream)
      );
      CREATE TABLE audit_checkpoints (
        source TEXT NOT NULL, seq INTEGER NOT NULL, hash TEXT NOT NULL, at INTEGER NOT NULL, signature TEXT NOT NULL, PRIMARY KEY (source, at)
      );
      CREATE TRIGGER audit_events_no_update BEFORE UPDATE ON audit_events BEGIN SELECT RAISE(ABORT, 'the audit trail is append-only'); END;
      CREATE TRIGGER audit_events_no_delete BEFORE DELETE ON audit_events BEGIN SELECT RAISE(ABORT, 'the audit trail is append-only'); END;
      CREATE TRIGGER audit_checkpoints_no_update BEFORE UPDATE ON audit_checkpoints BEGIN SELECT RAISE(ABORT, 'checkpoints are append-only'); END;
      CREATE TRIGGER audit_checkpoints_no_delete BEFORE DELETE ON audit_checkpoints BEGIN SELECT RAISE(ABORT, 'checkpoints are append-only'); END;`,
    postgres: `
      CREATE TABLE audit_events (
        source TEXT NOT NULL, seq BIGINT NOT NULL, stream TEXT NOT NULL, stream_seq BIGINT NOT NULL, received_at BIGINT NOT NULL,
        event TEXT NOT NULL, txn TEXT, prev_hash TEXT NOT NULL, hash TEXT NOT NULL,
        PRIMARY KEY (source, seq), UNIQUE (source, stream, stream_seq)
      );
      CREATE INDEX audit_events_by_txn ON audit_events (txn);
      CREATE TABLE audit_streams (
        source TEXT NOT NULL, stream TEXT NOT NULL, last_stream_seq BIGINT NOT NULL, dropped BIGINT NOT NULL, gaps BIGINT NOT NULL,
        first_seen BIGINT NOT NULL, last_seen BIGINT NOT NULL, PRIMARY KEY (source, stream)
      );
      CREATE TABLE audit_checkpoints (
        source TEXT NOT NULL, seq BIGINT NOT NULL, hash TEXT NOT NULL, at BIGINT NOT NULL, signature TEXT NOT NULL, PRIMARY KEY (source, at)
      );
      CREATE FUNCTION lockstep_append_only() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION 'the audit trail is append-only'; END $$;
      CREATE TRIGGER audit_events_append_only BEFORE UPDATE OR DELETE ON audit_events FOR EACH ROW EXECUTE FUNCTION lockstep_append_only();
      CREATE TRIGGER audit_checkpoints_append_only BEFORE UPDATE OR DELETE ON audit_checkpoints FOR EACH ROW EXECUTE FUNCTION lockstep_append_only();`,
  },
  {
    version: 5,
    // Alerts the monitor raised: one row per firing, never edited.
    sqlite: `
      CREATE TABLE alerts (
        id TEXT PRIMARY KEY, rule TEXT NOT NULL, severity TEXT NOT NULL, subject TEXT NOT NULL, summary TEXT NOT NULL,
        details TEXT NOT NULL, at INTEGER NOT NULL
      );
      CREATE INDEX alerts_by_time ON alerts (at);`,
    postgres: `
      CREATE TABLE alerts (
        id TEXT PRIMARY KEY, rule TEXT NOT NULL, severity TEXT NOT NULL, subject TEXT NOT NULL, summary TEXT NOT NULL,
        details TEXT NOT NULL, at BIGINT NOT NULL
      );
      CREATE INDEX alerts_by_time ON alerts (at);`,
  },
  {
    version: 6,
    // Scan runs the scanner posted: one row per run id, never edited, all kept (no retention). The
    // scanner is the sender's SPIFFE ID from its certificate; summary and report are JSON text.
    sqlite: `
      CREATE TABLE scan_runs (
        run_id TEXT PRIMARY KEY, scanner TEXT NOT NULL, trust_domain TEXT NOT NULL, started_at INTEGER NOT NULL, finished_at INTEGER NOT NULL,
        exit_code INTEGER NOT NULL, summary TEXT NOT NULL, report TEXT NOT NULL, received_at INTEGER NOT NULL
      );
      CREATE INDEX scan_runs_by_start ON scan_runs (started_at);`,
    postgres: `
      CREATE TABLE scan_runs (
        run_id TEXT PRIMARY KEY, scanner TEXT NOT NULL, trust_domain TEXT NOT NULL, started_at BIGINT NOT NULL, finished_at BIGINT NOT NULL,
        exit_code INTEGER NOT NULL, summary TEXT NOT NULL, report TEXT NOT NULL, received_at BIGINT NOT NULL
      );
      CREATE INDEX scan_runs_by_start ON scan_runs (started_at);`,
  },
  {
    version: 7,
    // Where each guard listens (host:port), from its heartbeat: the scanner sends only there.
    sqlite: `ALTER TABLE services ADD COLUMN endpoints TEXT NOT NULL DEFAULT '[]';`,
    postgres: `ALTER TABLE services ADD COLUMN endpoints TEXT NOT NULL DEFAULT '[]';`,
  },
  {
    version: 8,
    // The audit trail proves itself (see the monitor's README):
    // - audit_legacy: each source's last position hashed with v1 (which did not cover stream,
    //   stream_seq and received_at); later events are v2. Fixed at upgrade, signed by the first link
    //   of the checkpoint chain.
    // - audit_streams: what the sender says it assigned (`written`, 0: not reported) and when it
    //   closed the stream cleanly.
    // - audit_chain: one signed chain of checkpoints, each naming the digest of the one before.
    sqlite: `
      CREATE TABLE audit_legacy (source TEXT PRIMARY KEY, through INTEGER NOT NULL);
      INSERT INTO audit_legacy (source, through) SELECT source, MAX(seq) FROM audit_events GROUP BY source;
      ALTER TABLE audit_streams ADD COLUMN written INTEGER NOT NULL DEFAULT 0;
      ALTER TABLE audit_streams ADD COLUMN closed_at INTEGER;
      CREATE TABLE audit_chain (n INTEGER PRIMARY KEY, at INTEGER NOT NULL, jws TEXT NOT NULL);
      CREATE TRIGGER audit_legacy_no_update BEFORE UPDATE ON audit_legacy BEGIN SELECT RAISE(ABORT, 'the audit trail is append-only'); END;
      CREATE TRIGGER audit_legacy_no_delete BEFORE DELETE ON audit_legacy BEGIN SELECT RAISE(ABORT, 'the audit trail is append-only'); END;
      CREATE TRIGGER audit_chain_no_update BEFORE UPDATE ON audit_chain BEGIN SELECT RAISE(ABORT, 'checkpoints are append-only'); END;
      CREATE TRIGGER audit_chain_no_delete BEFORE DELETE ON audit_chain BEGIN SELECT RAISE(ABORT, 'checkpoints are append-only'); END;`,
    postgres: `
      CREATE TABLE audit_legacy (source TEXT PRIMARY KEY, through BIGINT NOT NULL);
      INSERT INTO audit_legacy (source, through) SELECT source, MAX(seq) FROM audit_events GROUP BY source;
      ALTER TABLE audit_streams ADD COLUMN written BIGINT NOT NULL DEFAULT 0;
      ALTER TABLE audit_streams ADD COLUMN closed_at BIGINT;
      CREATE TABLE audit_chain (n BIGINT PRIMARY KEY, at BIGINT NOT NULL, jws TEXT NOT NULL);
      CREATE TRIGGER audit_legacy_append_only BEFORE UPDATE OR DELETE ON audit_legacy FOR EACH ROW EXECUTE FUNCTION lockstep_append_only();
      CREATE TRIGGER audit_chain_append_only BEFORE UPDATE OR DELETE ON audit_chain FOR EACH ROW EXECUTE FUNCTION lockstep_append_only();`,
  },
  {
    version: 9,
    // A revocation made by mistake can be lifted (`lockstep revoke --lift`): the row stays, marked, and
    // moves to a new feed position so that guards hear of it.
    sqlite: `
      ALTER TABLE revocations ADD COLUMN lifted_at INTEGER;
      ALTER TABLE revocations ADD COLUMN lifted_by TEXT;
      ALTER TABLE revocations ADD COLUMN lift_reason TEXT;`,
    postgres: `
      ALTER TABLE revocations ADD COLUMN lifted_at BIGINT;
      ALTER TABLE revocations ADD COLUMN lifted_by TEXT;
      ALTER TABLE revocations ADD COLUMN lift_reason TEXT;`,
  },
  {
    version: 10,
    // The control plane's private keys, shared by its replicas: one row per document (a key ring, the CA,
    // …) and generation, sealed under a key-encryption key that is never stored (ca/sealed.ts).
    sqlite: `
      CREATE TABLE key_documents (
        name TEXT NOT NULL, generation INTEGER NOT NULL, kek_id TEXT NOT NULL, wrapped_dek TEXT NOT NULL,
        sealed TEXT NOT NULL, created_at INTEGER NOT NULL, PRIMARY KEY (name, generation)
      );`,
    postgres: `
      CREATE TABLE key_documents (
        name TEXT NOT NULL, generation BIGINT NOT NULL, kek_id TEXT NOT NULL, wrapped_dek TEXT NOT NULL,
        sealed TEXT NOT NULL, created_at BIGINT NOT NULL, PRIMARY KEY (name, generation)
      );`,
  },
  {
    version: 11,
    // Recovery after expiry (ca/recover.ts): an SVID is spent once, by its renewal or its recovery,
    // and `issued_svids` records recoveries. SQLite cannot change a CHECK: the table is rebuilt.
    sqlite: `
      CREATE TABLE svid_successions (
        serial TEXT PRIMARY KEY, successor TEXT NOT NULL, at INTEGER NOT NULL,
        via TEXT NOT NULL CHECK (via IN ('renew', 'recover'))
      );
      CREATE TABLE issued_svids_11 (
        serial TEXT PRIMARY KEY, spiffe_id TEXT NOT NULL, issued_at INTEGER NOT NULL,
        expires_at INTEGER NOT NULL, via TEXT NOT NULL CHECK (via IN ('join', 'renew', 'recover'))
      );
      INSERT INTO issued_svids_11 SELECT serial, spiffe_id, issued_at, expires_at, via FROM issued_svids;
      DROP TABLE issued_svids;
      ALTER TABLE issued_svids_11 RENAME TO issued_svids;
      CREATE INDEX issued_svids_by_spiffe_id ON issued_svids (spiffe_id);`,
    postgres: `
      CREATE TABLE svid_successions (
        serial TEXT PRIMARY KEY, successor TEXT NOT NULL, at BIGINT NOT NULL,
        via TEXT NOT NULL CHECK (via IN ('renew', 'recover'))
      );
      ALTER TABLE issued_svids DROP CONSTRAINT IF EXISTS issued_svids_via_check;
      ALTER TABLE issued_svids ADD CONSTRAINT issued_svids_via_check CHECK (via IN ('join', 'renew', 'recover'));`,
  },
  {
    version: 12,
    // The policy replicas share (policy/policy-service.ts, shared mode): every set published, by its content
    // version (sources: JSON, file name → text), and one head row naming the set in force. `seq` moves by one
    // per publication: writers compare-and-set on it. Sets are all kept (they are small, and the audit trail
    // names versions): a re-published version's row records its latest publication. The head keeps the publishing
    // replica's signature (policy/policy-head-signature.ts): a database writer cannot make up a head replicas adopt.
    sqlite: `
      CREATE TABLE policy_sets (
        version TEXT PRIMARY KEY, sources TEXT NOT NULL, applied_at INTEGER NOT NULL, applied_by TEXT NOT NULL
      );
      CREATE TABLE policy_head (
        id INTEGER PRIMARY KEY CHECK (id = 1), version TEXT NOT NULL, seq INTEGER NOT NULL, signature TEXT NOT NULL
      );`,
    postgres: `
      CREATE TABLE policy_sets (
        version TEXT PRIMARY KEY, sources TEXT NOT NULL, applied_at BIGINT NOT NULL, applied_by TEXT NOT NULL
      );
      CREATE TABLE policy_head (
        id INTEGER PRIMARY KEY CHECK (id = 1), version TEXT NOT NULL, seq BIGINT NOT NULL, signature TEXT NOT NULL
      );`,
  },
  {
    version: 13,
    // Recovery is idempotent (ca/recover.ts): a succession names its successor's key (SHA-256 of the SPKI DER),
    // so that a retry with that key after a lost answer is served again; null for rows from before. A clean stop
    // retires the SVID it presents (`via = 'retire'`, no successor). SQLite cannot change a CHECK: rebuilt.
    sqlite: `
      CREATE TABLE svid_successions_13 (
        serial TEXT PRIMARY KEY, successor TEXT NOT NULL, successor_key TEXT, at INTEGER NOT NULL,
        via TEXT NOT NULL CHECK (via IN ('renew', 'recover', 'retire'))
      );
      INSERT INTO svid_successions_13 (serial, successor, successor_key, at, via)
        SELECT serial, successor, NULL, at, via FROM svid_successions;
      DROP TABLE svid_successions;
      ALTER TABLE svid_successions_13 RENAME TO svid_successions;`,
    postgres: `
      ALTER TABLE svid_successions ADD COLUMN successor_key TEXT;
      ALTER TABLE svid_successions DROP CONSTRAINT IF EXISTS svid_successions_via_check;
      ALTER TABLE svid_successions ADD CONSTRAINT svid_successions_via_check CHECK (via IN ('renew', 'recover', 'retire'));`,
  },
];
