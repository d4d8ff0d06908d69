/**
 * The embedded store: one SQLite file (`node:sqlite`) in WAL mode, private to the control plane's
 * user (file 0600 in a 0700 directory). Synchronous underneath; the interface is async so that the
 * PostgreSQL store can stand in.
 */
import { chmodSync, mkdirSync } from 'node:fs';
import { dirname } from 'node:path';
import { DatabaseSync } from 'node:sqlite';
import { MIGRATIONS } from './migrations.ts';
import { heartbeatValues, issuedSvidFromRow, joinTokenFromRow, redeemRefusal, revocationFromRow, serviceFromRow } from './rows.ts';
import type { ControlPlaneStore } from './store.ts';

type Row = Record<string, unknown>;

/** `path` is a file, or `:memory:` for tests. */
export function openSqliteStore(path: string): ControlPlaneStore {
  if (path !== ':memory:') mkdirSync(dirname(path), { recursive: true, mode: 0o700 });
  const db = new DatabaseSync(path);
  if (path !== ':memory:') chmodSync(path, 0o600);
  db.exec('PRAGMA journal_mode = WAL; PRAGMA busy_timeout = 5000; PRAGMA foreign_keys = ON;');
  migrate(db);

  const insertJoinToken = db.prepare('INSERT INTO join_tokens (token_hash, service, bundle_hash, created_at, expires_at, created_by) VALUES (?, ?, ?, ?, ?, ?)');
  const redeem = db.prepare('UPDATE join_tokens SET used_at = ? WHERE token_hash = ? AND used_at IS NULL AND expires_at > ? RETURNING *');
  const joinToken = db.prepare('SELECT * FROM join_tokens WHERE token_hash = ?');
  const insertSvid = db.prepare('INSERT INTO issued_svids (serial, spiffe_id, issued_at, expires_at, via) VALUES (?, ?, ?, ?, ?)');
  const svidsOf = db.prepare('SELECT * FROM issued_svids WHERE spiffe_id = ? ORDER BY issued_at, serial');
  const insertRevocation = db.prepare('INSERT INTO revocations (kind, value, reason, actor, at) VALUES (?, ?, ?, ?, ?) ON CONFLICT (kind, value) DO NOTHING');
  const revocation = db.prepare('SELECT * FROM revocations WHERE kind = ? AND value = ?');
  const since = db.prepare('SELECT * FROM revocations WHERE seq > ? ORDER BY seq');
  const heartbeat = db.prepare(`INSERT INTO services (spiffe_id, service, routes, policy_version, svid_expires_at, mode, guard_version, first_seen, last_seen)
    VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?8)
    ON CONFLICT (spiffe_id) DO UPDATE SET service = excluded.service, routes = excluded.routes, policy_version = excluded.policy_version,
      svid_expires_at = excluded.svid_expires_at, mode = excluded.mode, guard_version = excluded.guard_version, last_seen = excluded.last_seen`);
  const allServices = db.prepare('SELECT * FROM services ORDER BY spiffe_id');

  return {
    kind: 'sqlite',
    async createJoinToken(record) {
      insertJoinToken.run(record.tokenHash, record.service, record.bundleHash, record.createdAt, record.expiresAt, record.createdBy);
    },
    async redeemJoinToken(tokenHash, now) {
      const row = redeem.get(now, tokenHash, now) as Row | undefined;
      if (row !== undefined) return { ok: true, record: joinTokenFromRow(row) };
      return { ok: false, reason: redeemRefusal(joinToken.get(tokenHash) as Row | undefined, now) };
    },
    async recordIssuedSvid(record) {
      insertSvid.run(record.serial, record.spiffeId, record.issuedAt, record.expiresAt, record.via);
    },
    async issuedSvids(spiffeId) {
      return (svidsOf.all(spiffeId) as Row[]).map(issuedSvidFromRow);
    },
    async addRevocation(entry) {
      insertRevocation.run(entry.kind, entry.value, entry.reason, entry.actor, entry.at);
      return revocationFromRow(revocation.get(entry.kind, entry.value) as Row);
    },
    async revocationsSince(seq) {
      return (since.all(seq) as Row[]).map(revocationFromRow);
    },
    async isRevoked(kind, value) {
      return revocation.get(kind, value) !== undefined;
    },
    async recordHeartbeat(record) {
      heartbeat.run(...(heartbeatValues(record) as (string | number | null)[]));
    },
    async services() {
      return (allServices.all() as Row[]).map(serviceFromRow);
    },
    async close() {
      if (db.isOpen) db.close();
    },
  };
}

function migrate(db: DatabaseSync): void {
  db.exec('CREATE TABLE IF NOT EXISTS lockstep_migrations (version INTEGER PRIMARY KEY, applied_at INTEGER NOT NULL)');
  // BEGIN IMMEDIATE takes the write lock first: two processes opening one file migrate one after the other.
  db.exec('BEGIN IMMEDIATE');
  try {
    const applied = new Set((db.prepare('SELECT version FROM lockstep_migrations').all() as Row[]).map((row) => Number(row.version)));
    for (const migration of MIGRATIONS) {
      if (applied.has(migration.version)) continue;
      db.exec(migration.sqlite);
      db.prepare('INSERT INTO lockstep_migrations (version, applied_at) VALUES (?, ?)').run(migration.version, Date.now());
    }
    db.exec('COMMIT');
  } catch (error) {
    db.exec('ROLLBACK');
    throw error;
  }
}
