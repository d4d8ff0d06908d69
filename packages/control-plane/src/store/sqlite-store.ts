/**
 * The embedded store: one SQLite file (`node:sqlite`) in WAL mode, private to the control plane's
 * user (file 0600 in a 0700 directory). Synchronous underneath; the interface is async so that the
 * PostgreSQL store can stand in.
 */
import { chmodSync, mkdirSync } from 'node:fs';
import { dirname } from 'node:path';
import type { DatabaseSync } from 'node:sqlite';
import { MIGRATIONS } from './migrations.ts';
import { planAppend } from './audit-append.ts';
import { firstLocked } from './login-lock.ts';
import {
  alertFromRow,
  auditCheckpointFromRow,
  auditEventFromRow,
  auditLinkFromRow,
  auditStreamFromRow,
  streamStateFromRow,
  heartbeatValues,
  issuedSvidFromRow,
  successionFromRow,
  joinTokenFromRow,
  loginFailuresFromRow,
  oidcFromRow,
  oidcValues,
  redeemRefusal,
  revocationFromRow,
  SCAN_SUMMARY_COLUMNS,
  scanRepeatOutcome,
  scanRunFromRow,
  scanRunValues,
  scanSummaryFromRow,
  serviceFromRow,
  userFromRow,
  userValues,
} from './rows.ts';
import {
  ALL_KEY_DOCUMENTS,
  checkRewrap,
  KEY_DOCUMENT_GENERATIONS,
  keyDocumentFromRow,
  keyGenerationsFromRows,
} from './key-documents.ts';
import {
  checkPublication,
  POLICY_HEAD,
  POLICY_HEAD_SEQ,
  policyHeadFromRow,
  policyHeadSeqFromRow,
  sourcesText,
} from './policy-sets.ts';
import { KEY_DOCUMENT_GENERATIONS_KEPT, type ControlPlaneStore, type IssuedSvidRecord } from './store.ts';

type Row = Record<string, unknown>;

/** `path` is a file, or `:memory:` for tests. */
export function openSqliteStore(path: string): ControlPlaneStore {
  if (path !== ':memory:') mkdirSync(dirname(path), { recursive: true, mode: 0o700 });
  // Loaded here, not imported: on Node 22 node:sqlite warns that it is experimental as it loads, which belongs
  // to a control plane that opens this store, not to every program that imports the package.
  const { DatabaseSync } = process.getBuiltinModule('node:sqlite');
  const db = new DatabaseSync(path);
  if (path !== ':memory:') chmodSync(path, 0o600);
  db.exec('PRAGMA journal_mode = WAL; PRAGMA busy_timeout = 5000; PRAGMA foreign_keys = ON;');
  migrate(db);

  const insertJoinToken = db.prepare(
    'INSERT INTO join_tokens (token_hash, service, bundle_hash, created_at, expires_at, created_by) VALUES (?, ?, ?, ?, ?, ?)',
  );
  const redeem = db.prepare(
    'UPDATE join_tokens SET used_at = ? WHERE token_hash = ? AND used_at IS NULL AND expires_at > ? RETURNING *',
  );
  const joinToken = db.prepare('SELECT * FROM join_tokens WHERE token_hash = ?');
  const insertSvid = db.prepare(
    'INSERT INTO issued_svids (serial, spiffe_id, issued_at, expires_at, via) VALUES (?, ?, ?, ?, ?)',
  );
  const svidsOf = db.prepare('SELECT * FROM issued_svids WHERE spiffe_id = ? ORDER BY issued_at, serial');
  // A retry for the recorded successor key moves the successor to its certificate (a retired row has no key).
  const spend =
    db.prepare(`INSERT INTO svid_successions (serial, successor, successor_key, at, via) VALUES (?, ?, ?, ?, ?)
    ON CONFLICT (serial) DO UPDATE SET successor = excluded.successor
    WHERE svid_successions.successor_key = excluded.successor_key AND svid_successions.via <> 'retire'`);
  const succession = db.prepare('SELECT * FROM svid_successions WHERE serial = ?');
  const insertRevocation = db.prepare(
    'INSERT INTO revocations (kind, value, reason, actor, at) VALUES (?, ?, ?, ?, ?) ON CONFLICT (kind, value) DO NOTHING',
  );
  const revocation = db.prepare('SELECT * FROM revocations WHERE kind = ? AND value = ?');
  const holding = db.prepare('SELECT 1 FROM revocations WHERE kind = ? AND value = ? AND lifted_at IS NULL');
  const dropLifted = db.prepare('DELETE FROM revocations WHERE kind = ? AND value = ? AND lifted_at IS NOT NULL');
  const takeHolding = db.prepare(
    'DELETE FROM revocations WHERE kind = ? AND value = ? AND lifted_at IS NULL RETURNING *',
  );
  const insertLifted =
    db.prepare(`INSERT INTO revocations (kind, value, reason, actor, at, lifted_at, lifted_by, lift_reason)
    VALUES (?, ?, ?, ?, ?, ?, ?, ?) RETURNING *`);
  const since = db.prepare('SELECT * FROM revocations WHERE seq > ? ORDER BY seq');
  const heartbeat =
    db.prepare(`INSERT INTO services (spiffe_id, service, routes, policy_version, svid_expires_at, mode, guard_version, first_seen, last_seen, endpoints)
    VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?8, ?9)
    ON CONFLICT (spiffe_id) DO UPDATE SET service = excluded.service, routes = excluded.routes, policy_version = excluded.policy_version,
      svid_expires_at = excluded.svid_expires_at, mode = excluded.mode, guard_version = excluded.guard_version, last_seen = excluded.last_seen, endpoints = excluded.endpoints`);
  const allServices = db.prepare('SELECT * FROM services ORDER BY spiffe_id');
  const deleteService = db.prepare('DELETE FROM services WHERE spiffe_id = ?');
  const insertUser = db.prepare(
    'INSERT INTO users (username, password_hash, roles, tenant, created_at, disabled_at) VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (username) DO NOTHING',
  );
  const userByName = db.prepare('SELECT * FROM users WHERE username = ?');
  const allUsers = db.prepare('SELECT * FROM users ORDER BY username');
  const updatePassword = db.prepare('UPDATE users SET password_hash = ? WHERE username = ?');
  const updateDisabled = db.prepare('UPDATE users SET disabled_at = ? WHERE username = ?');
  const addFailure = db.prepare(`INSERT INTO login_failures (key, failures, last_failure_at) VALUES (?1, 1, ?2)
    ON CONFLICT (key) DO UPDATE SET failures = CASE WHEN login_failures.last_failure_at < ?3 THEN 1 ELSE login_failures.failures + 1 END, last_failure_at = ?2
    RETURNING *`);
  const forgiveFailure = db.prepare('UPDATE login_failures SET failures = failures - 1 WHERE key = ? AND failures > 0');
  const failuresOf = db.prepare('SELECT * FROM login_failures WHERE key = ?');
  const clearFailures = db.prepare('DELETE FROM login_failures WHERE key = ?');
  const sweepFailures = db.prepare('DELETE FROM login_failures WHERE last_failure_at < ?');
  const upsertArtefact =
    db.prepare(`INSERT INTO oidc_models (model, id, payload, grant_id, user_code, uid, expires_at) VALUES (?, ?, ?, ?, ?, ?, ?)
    ON CONFLICT (model, id) DO UPDATE SET payload = excluded.payload, grant_id = excluded.grant_id, user_code = excluded.user_code, uid = excluded.uid, expires_at = excluded.expires_at`);
  const artefact = db.prepare('SELECT * FROM oidc_models WHERE model = ? AND id = ?');
  const artefactByUid = db.prepare('SELECT * FROM oidc_models WHERE model = ? AND uid = ?');
  const artefactByUserCode = db.prepare('SELECT * FROM oidc_models WHERE model = ? AND user_code = ?');
  const consumeArtefact = db.prepare('UPDATE oidc_models SET consumed_at = ? WHERE model = ? AND id = ?');
  const destroyArtefact = db.prepare('DELETE FROM oidc_models WHERE model = ? AND id = ?');
  const revokeGrant = db.prepare('DELETE FROM oidc_models WHERE grant_id = ?');
  const sweep = db.prepare('DELETE FROM oidc_models WHERE expires_at IS NOT NULL AND expires_at < ?');
  const auditHead = db.prepare('SELECT seq, hash FROM audit_events WHERE source = ? ORDER BY seq DESC LIMIT 1');
  const auditStream = db.prepare('SELECT * FROM audit_streams WHERE source = ? AND stream = ?');
  const auditStored = db.prepare('SELECT event FROM audit_events WHERE source = ? AND stream = ? AND stream_seq = ?');
  const auditHashAt = db.prepare('SELECT hash FROM audit_events WHERE source = ? AND seq = ?');
  const insertAudit = db.prepare(
    'INSERT INTO audit_events (source, seq, stream, stream_seq, received_at, event, txn, prev_hash, hash) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)',
  );
  const upsertStream =
    db.prepare(`INSERT INTO audit_streams (source, stream, last_stream_seq, dropped, gaps, written, closed_at, first_seen, last_seen) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?8)
    ON CONFLICT (source, stream) DO UPDATE SET last_stream_seq = excluded.last_stream_seq, dropped = excluded.dropped, gaps = excluded.gaps,
      written = excluded.written, closed_at = excluded.closed_at, last_seen = MAX(audit_streams.last_seen, excluded.last_seen)`);
  const auditHeads = db.prepare(
    'SELECT e.source, e.seq, e.hash FROM audit_events e JOIN (SELECT source, MAX(seq) AS seq FROM audit_events GROUP BY source) h ON e.source = h.source AND e.seq = h.seq ORDER BY e.source',
  );
  const auditAfter = db.prepare('SELECT * FROM audit_events WHERE source = ? AND seq > ? ORDER BY seq LIMIT ?');
  const auditTxn = db.prepare('SELECT * FROM audit_events WHERE txn = ? ORDER BY received_at, source, seq');
  const auditStreams = db.prepare('SELECT * FROM audit_streams ORDER BY source, first_seen');
  const auditLegacy = db.prepare('SELECT source, through FROM audit_legacy ORDER BY source');
  const insertLink = db.prepare('INSERT INTO audit_chain (n, at, jws) VALUES (?, ?, ?)');
  const linksAfter = db.prepare('SELECT n, at, jws FROM audit_chain WHERE n > ? ORDER BY n LIMIT ?');
  const newestLink = db.prepare('SELECT n, at, jws FROM audit_chain ORDER BY n DESC LIMIT 1');
  const checkpointsOf = db.prepare('SELECT * FROM audit_checkpoints WHERE source = ? ORDER BY at');
  const allCheckpoints = db.prepare('SELECT * FROM audit_checkpoints ORDER BY source, at');
  const insertAlert = db.prepare(
    'INSERT INTO alerts (id, rule, severity, subject, summary, details, at) VALUES (?, ?, ?, ?, ?, ?, ?)',
  );
  const recentAlerts = db.prepare('SELECT * FROM alerts WHERE at >= ? ORDER BY at DESC, id LIMIT ?');
  const insertScan =
    db.prepare(`INSERT INTO scan_runs (run_id, scanner, trust_domain, started_at, finished_at, exit_code, summary, report, received_at)
    VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (run_id) DO NOTHING`);
  const scanById = db.prepare('SELECT * FROM scan_runs WHERE run_id = ?');
  const recentScans = db.prepare(
    `SELECT ${SCAN_SUMMARY_COLUMNS} FROM scan_runs ORDER BY started_at DESC, received_at DESC, run_id LIMIT ?`,
  );

  const keyDocumentHead = db.prepare('SELECT * FROM key_documents WHERE name = ? ORDER BY generation DESC LIMIT 1');
  // Only the next generation of its name: a compare-and-set in one statement.
  const insertKeyDocument =
    db.prepare(`INSERT INTO key_documents (name, generation, kek_id, wrapped_dek, sealed, created_at)
    SELECT ?1, ?2, ?3, ?4, ?5, ?6
    WHERE ?2 = (SELECT COALESCE(MAX(generation), -1) + 1 FROM key_documents WHERE name = ?1)
    ON CONFLICT (name, generation) DO NOTHING`);
  const pruneKeyDocuments = db.prepare('DELETE FROM key_documents WHERE name = ? AND generation <= ?');
  const keyGenerations = db.prepare(KEY_DOCUMENT_GENERATIONS);
  const allKeyDocuments = db.prepare(ALL_KEY_DOCUMENTS);
  const rewrapKey = db.prepare(`UPDATE key_documents SET kek_id = ?, wrapped_dek = ?
    WHERE name = ? AND generation = ? AND kek_id = ? AND wrapped_dek = ? AND sealed = ?`);

  // The head moves only from the position the publisher read: a compare-and-set in one statement each.
  const insertPolicyHead = db.prepare(
    'INSERT INTO policy_head (id, version, seq, signature) VALUES (1, ?, 1, ?) ON CONFLICT (id) DO NOTHING',
  );
  const movePolicyHead = db.prepare(
    'UPDATE policy_head SET version = ?, seq = seq + 1, signature = ? WHERE id = 1 AND seq = ?',
  );
  const upsertPolicySet =
    db.prepare(`INSERT INTO policy_sets (version, sources, applied_at, applied_by) VALUES (?, ?, ?, ?)
    ON CONFLICT (version) DO UPDATE SET sources = excluded.sources, applied_at = excluded.applied_at, applied_by = excluded.applied_by`);
  const policyHead = db.prepare(POLICY_HEAD);
  const policyHeadSeq = db.prepare(POLICY_HEAD_SEQ);

  const issuedLog = groupCommit<IssuedSvidRecord>(db, (record) => {
    insertSvid.run(record.serial, record.spiffeId, record.issuedAt, record.expiresAt, record.via);
  });

  return {
    kind: 'sqlite',
    async createJoinToken(record) {
      insertJoinToken.run(
        record.tokenHash,
        record.service,
        record.bundleHash,
        record.createdAt,
        record.expiresAt,
        record.createdBy,
      );
    },
    async redeemJoinToken(tokenHash, now) {
      const row = redeem.get(now, tokenHash, now) as Row | undefined;
      if (row !== undefined) return { ok: true, record: joinTokenFromRow(row) };
      return { ok: false, reason: redeemRefusal(joinToken.get(tokenHash) as Row | undefined, now) };
    },
    recordIssuedSvid: (record) => issuedLog.append(record),
    async issuedSvids(spiffeId) {
      return (svidsOf.all(spiffeId) as Row[]).map(issuedSvidFromRow);
    },
    async spendSvid(entry) {
      if (spend.run(entry.serial, entry.successor, entry.successorKey, entry.at, entry.via).changes === 1) return null;
      return successionFromRow(succession.get(entry.serial) as Row);
    },
    async svidSuccession(serial) {
      const row = succession.get(serial) as Row | undefined;
      return row === undefined ? null : successionFromRow(row);
    },
    async addRevocation(entry) {
      // A lifted entry makes room: the revocation holds again, at a new position (AUTOINCREMENT never reuses one).
      return inTransaction(db, () => {
        dropLifted.run(entry.kind, entry.value);
        insertRevocation.run(entry.kind, entry.value, entry.reason, entry.actor, entry.at);
        return revocationFromRow(revocation.get(entry.kind, entry.value) as Row);
      });
    },
    async liftRevocation(kind, value, lift) {
      return inTransaction(db, () => {
        const held = takeHolding.get(kind, value) as Row | undefined;
        if (held === undefined) return null;
        return revocationFromRow(
          insertLifted.get(
            kind,
            value,
            held.reason as string,
            held.actor as string,
            held.at as number,
            lift.at,
            lift.actor,
            lift.reason,
          ) as Row,
        );
      });
    },
    async revocationsSince(seq) {
      return (since.all(seq) as Row[]).map(revocationFromRow);
    },
    async isRevoked(kind, value) {
      return holding.get(kind, value) !== undefined;
    },
    async revocation(kind, value) {
      const row = revocation.get(kind, value) as Row | undefined;
      return row === undefined ? null : revocationFromRow(row);
    },
    async recordHeartbeat(record) {
      heartbeat.run(...(heartbeatValues(record) as (string | number | null)[]));
    },
    async services() {
      return (allServices.all() as Row[]).map(serviceFromRow);
    },
    async removeService(spiffeId) {
      return Number(deleteService.run(spiffeId).changes) === 1;
    },
    async createUser(record) {
      return Number(insertUser.run(...userValues(record)).changes) === 1;
    },
    async user(username) {
      const row = userByName.get(username) as Row | undefined;
      return row === undefined ? null : userFromRow(row);
    },
    async users() {
      return (allUsers.all() as Row[]).map(userFromRow);
    },
    async setPasswordHash(username, passwordHash) {
      updatePassword.run(passwordHash, username);
    },
    async setUserDisabled(username, at) {
      updateDisabled.run(at, username);
    },
    async addLoginFailure(key, now, windowMs) {
      return loginFailuresFromRow(addFailure.get(key, now, now - windowMs) as Row);
    },
    async reserveLoginAttempt(claims, now) {
      // The write lock first: the check and the counts are one transaction, which no other
      // connection (a replica on the same file) can interleave with.
      db.exec('BEGIN IMMEDIATE');
      try {
        const current = claims.map(({ key }) => {
          const row = failuresOf.get(key) as Row | undefined;
          return row === undefined ? null : loginFailuresFromRow(row);
        });
        const locked = firstLocked(claims, current, now);
        const counts =
          locked === null
            ? claims.map(({ key, limits }) =>
                loginFailuresFromRow(addFailure.get(key, now, now - limits.windowMs) as Row),
              )
            : [];
        db.exec('COMMIT');
        return locked === null
          ? { reserved: true, counts }
          : { reserved: false, lockedClaim: locked.claim, lockedUntil: locked.until };
      } catch (error) {
        if (db.isTransaction) db.exec('ROLLBACK');
        throw error;
      }
    },
    async forgiveLoginFailure(key) {
      forgiveFailure.run(key);
    },
    async loginFailures(key) {
      const row = failuresOf.get(key) as Row | undefined;
      return row === undefined ? null : loginFailuresFromRow(row);
    },
    async clearLoginFailures(key) {
      return Number(clearFailures.run(key).changes) > 0;
    },
    async sweepLoginFailures(before) {
      return Number(sweepFailures.run(before).changes);
    },
    async upsertOidc(entry) {
      upsertArtefact.run(...oidcValues(entry));
    },
    async findOidc(model, id) {
      const row = artefact.get(model, id) as Row | undefined;
      return row === undefined ? null : oidcFromRow(row);
    },
    async findOidcBy(model, field, value) {
      const row = (field === 'uid' ? artefactByUid : artefactByUserCode).get(model, value) as Row | undefined;
      return row === undefined ? null : oidcFromRow(row);
    },
    async consumeOidc(model, id, at) {
      consumeArtefact.run(at, model, id);
    },
    async destroyOidc(model, id) {
      destroyArtefact.run(model, id);
    },
    async revokeOidcGrant(grantId) {
      revokeGrant.run(grantId);
    },
    async sweepOidc(now) {
      return Number(sweep.run(now).changes);
    },
    async appendAudit(source, batch, receivedAt) {
      db.exec('BEGIN IMMEDIATE');
      try {
        const head = auditHead.get(source) as { seq: number; hash: string } | undefined;
        const stream = auditStream.get(source, batch.stream) as Row | undefined;
        const plan = planAppend(
          source,
          head ?? null,
          stream === undefined ? null : streamStateFromRow(stream),
          (streamSeq) =>
            ((auditStored.get(source, batch.stream, streamSeq) as Row | undefined)?.event as string | undefined) ??
            null,
          batch,
          receivedAt,
        );
        for (const row of plan.rows)
          insertAudit.run(
            source,
            row.seq,
            batch.stream,
            row.entry.streamSeq,
            receivedAt,
            row.entry.event,
            row.txn,
            row.prevHash,
            row.hash,
          );
        const next = plan.stream;
        upsertStream.run(
          source,
          batch.stream,
          next.lastStreamSeq,
          next.dropped,
          next.gaps,
          next.written,
          next.closedAt,
          receivedAt,
        );
        db.exec('COMMIT');
        return plan.result;
      } catch (error) {
        if (db.isTransaction) db.exec('ROLLBACK');
        throw error;
      }
    },
    async auditHeads() {
      return (auditHeads.all() as Row[]).map((row) => ({
        source: String(row.source),
        seq: Number(row.seq),
        hash: String(row.hash),
      }));
    },
    async auditHashesAt(source, seqs) {
      const found = new Map<number, string>();
      for (const seq of seqs) {
        const row = auditHashAt.get(source, seq) as Row | undefined;
        if (row !== undefined) found.set(seq, String(row.hash));
      }
      return found;
    },
    async auditEvents(source, afterSeq, limit) {
      return (auditAfter.all(source, afterSeq, limit) as Row[]).map(auditEventFromRow);
    },
    async auditByTxn(txn) {
      return (auditTxn.all(txn) as Row[]).map(auditEventFromRow);
    },
    async auditStreams() {
      return (auditStreams.all() as Row[]).map(auditStreamFromRow);
    },
    async auditCheckpoints(source) {
      return ((source === undefined ? allCheckpoints.all() : checkpointsOf.all(source)) as Row[]).map(
        auditCheckpointFromRow,
      );
    },
    async auditLegacy() {
      return (auditLegacy.all() as Row[]).map((row) => ({ source: String(row.source), through: Number(row.through) }));
    },
    async appendAuditLink(link) {
      insertLink.run(link.n, link.at, link.jws);
    },
    async auditLinks(afterN, limit) {
      return (linksAfter.all(afterN, limit) as Row[]).map(auditLinkFromRow);
    },
    async newestAuditLink() {
      const row = newestLink.get() as Row | undefined;
      return row === undefined ? null : auditLinkFromRow(row);
    },
    async addAlert(alert) {
      insertAlert.run(alert.id, alert.rule, alert.severity, alert.subject, alert.summary, alert.details, alert.at);
    },
    async alerts(limit, since = 0) {
      return (recentAlerts.all(since, limit) as Row[]).map(alertFromRow);
    },
    async recordScan(run) {
      if (Number(insertScan.run(...scanRunValues(run)).changes) === 1) return 'stored';
      return scanRepeatOutcome(scanById.get(run.runId) as Row | undefined, run);
    },
    async scans(limit) {
      return (recentScans.all(limit) as Row[]).map(scanSummaryFromRow);
    },
    async scan(runId) {
      const row = scanById.get(runId) as Row | undefined;
      return row === undefined ? null : scanRunFromRow(row);
    },
    async keyDocument(name) {
      const row = keyDocumentHead.get(name) as Row | undefined;
      return row === undefined ? null : keyDocumentFromRow(row);
    },
    async putKeyDocument(document) {
      return inTransaction(db, () => {
        const { name, generation, kekId, wrappedDek, sealed } = document;
        if (Number(insertKeyDocument.run(name, generation, kekId, wrappedDek, sealed, Date.now()).changes) !== 1)
          return false;
        pruneKeyDocuments.run(name, generation - KEY_DOCUMENT_GENERATIONS_KEPT);
        return true;
      });
    },
    async keyDocumentGenerations() {
      return keyGenerationsFromRows(keyGenerations.all() as Row[]);
    },
    async keyDocuments() {
      return (allKeyDocuments.all() as Row[]).map(keyDocumentFromRow);
    },
    async rewrapKeyDocument(current, rewrapped) {
      checkRewrap(current, rewrapped);
      const { name, generation, kekId, wrappedDek, sealed } = current;
      return (
        Number(
          rewrapKey.run(rewrapped.kekId, rewrapped.wrappedDek, name, generation, kekId, wrappedDek, sealed).changes,
        ) === 1
      );
    },
    async publishPolicy(set, expectedSeq) {
      checkPublication(set, expectedSeq);
      return inTransaction(db, () => {
        const moved =
          expectedSeq === 0
            ? insertPolicyHead.run(set.version, set.signature)
            : movePolicyHead.run(set.version, set.signature, expectedSeq);
        if (Number(moved.changes) !== 1) return false;
        upsertPolicySet.run(set.version, sourcesText(set.sources), set.appliedAt, set.appliedBy);
        return true;
      });
    },
    async policyHead() {
      const row = policyHead.get() as Row | undefined;
      return row === undefined ? null : policyHeadFromRow(row);
    },
    async policyHeadSeq() {
      return policyHeadSeqFromRow(policyHeadSeq.get() as Row | undefined);
    },
    async close() {
      if (db.isOpen) db.close();
    },
  };
}

/**
 * Group commit for a hot insert: every write of one event-loop turn goes into one transaction (one
 * fsync instead of one per row), and each caller's promise settles only once its row is durable.
 * When the batch fails, its rows are retried one by one, so that only the faulty one is refused.
 */
function groupCommit<T>(db: DatabaseSync, write: (row: T) => void): { append(row: T): Promise<void> } {
  let pending: { row: T; resolve: () => void; reject: (error: unknown) => void }[] = [];
  const flush = () => {
    const batch = pending;
    pending = [];
    try {
      db.exec('BEGIN IMMEDIATE');
      for (const entry of batch) write(entry.row);
      db.exec('COMMIT');
      for (const entry of batch) entry.resolve();
    } catch {
      if (db.isTransaction) db.exec('ROLLBACK');
      for (const entry of batch) {
        try {
          write(entry.row);
          entry.resolve();
        } catch (error) {
          entry.reject(error);
        }
      }
    }
  };
  return {
    append(row) {
      return new Promise((resolve, reject) => {
        if (pending.push({ row, resolve, reject }) === 1) setImmediate(flush);
      });
    },
  };
}

function migrate(db: DatabaseSync): void {
  db.exec('CREATE TABLE IF NOT EXISTS lockstep_migrations (version INTEGER PRIMARY KEY, applied_at INTEGER NOT NULL)');
  // BEGIN IMMEDIATE takes the write lock first: two processes opening one file migrate one after the other.
  db.exec('BEGIN IMMEDIATE');
  try {
    const applied = new Set(
      (db.prepare('SELECT version FROM lockstep_migrations').all() as Row[]).map((row) => Number(row.version)),
    );
    for (const migration of MIGRATIONS) {
      if (applied.has(migration.version)) continue;
      db.exec(migration.sqlite);
      db.prepare('INSERT INTO lockstep_migrations (version, applied_at) VALUES (?, ?)').run(
        migration.version,
        Date.now(),
      );
    }
    db.exec('COMMIT');
  } catch (error) {
    db.exec('ROLLBACK');
    throw error;
  }
}

function inTransaction<T>(db: DatabaseSync, work: () => T): T {
  db.exec('BEGIN IMMEDIATE');
  try {
    const result = work();
    db.exec('COMMIT');
    return result;
  } catch (error) {
    if (db.isTransaction) db.exec('ROLLBACK');
    throw error;
  }
}
