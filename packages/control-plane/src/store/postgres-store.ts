/**
 * The scale-out store: PostgreSQL through `pg`. Several control-plane replicas share it; schema
 * migrations run under an advisory lock so that replicas starting together migrate once.
 * `schema` (default `public`) lets tests and tenants keep their tables apart.
 */
import { createHash } from 'node:crypto';
import pg from 'pg';
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
import { pgNotifications } from './pg-notifications.ts';
import { isStoreUnavailable } from './store-unavailable.ts';
import {
  checkPublication,
  POLICY_HEAD,
  POLICY_HEAD_SEQ,
  policyHeadFromRow,
  policyHeadSeqFromRow,
  sourcesText,
} from './policy-sets.ts';
import { KEY_DOCUMENT_GENERATIONS_KEPT, SQL_IDENTIFIER, type ControlPlaneStore, type LoginFailures } from './store.ts';

export interface PostgresStoreOptions {
  /** e.g. `postgres://lockstep@127.0.0.1:5432/lockstep`. */
  readonly connectionString: string;
  readonly schema?: string;
  readonly maxConnections?: number;
  /**
   * The most one statement may take (default 10 s): PostgreSQL cancels it then (statement_timeout), and
   * a database that stops answering at all (a network black hole) fails it a second later on this side.
   * A request then fails (503 LOCKSTEP_CP_STORE) instead of hanging for minutes.
   */
  readonly statementTimeoutMs?: number;
  /**
   * A pooled connection that failed while idle (a database restart, a failover, a network cut): it is
   * dropped, and the next query opens another. Default: one line on stderr.
   */
  readonly onError?: (error: Error) => void;
}

/** A connection (TCP and the start-up exchange) that takes longer fails: the request fails over instead. */
const CONNECT_TIMEOUT_MS = 5_000;
const STATEMENT_TIMEOUT_MS = 10_000;
/** TCP keepalive from 10 s of silence, so that a connection cut without a word (no FIN, no RST) is noticed. */
const KEEPALIVE_AFTER_MS = 10_000;
// An arbitrary, fixed key: the lock that serializes Lockstep's migrations across replicas.
const MIGRATION_LOCK = 0x10c5_7e90;
/**
 * Taken by every revocation write before its position (seq) is drawn, and held to its commit: positions
 * then commit in order. Without it two writers (two replicas, two pool connections) could commit seq 8
 * before seq 7, and a reader that had seen 8 would skip 7 for ever (the feed and every stream's
 * Last-Event-ID read "everything after the highest seen").
 */
const REVOCATION_LOCK = 0x10c5_7e91;
// One more failure under a key ($1) at $2; a count whose last failure is before $3 starts again.
const ADD_LOGIN_FAILURE = `INSERT INTO login_failures (key, failures, last_failure_at) VALUES ($1, 1, $2)
  ON CONFLICT (key) DO UPDATE SET failures = CASE WHEN login_failures.last_failure_at < $3 THEN 1 ELSE login_failures.failures + 1 END, last_failure_at = $2
  RETURNING *`;

export async function openPostgresStore(options: PostgresStoreOptions): Promise<ControlPlaneStore> {
  const schema = options.schema ?? 'public';
  if (!SQL_IDENTIFIER.test(schema))
    throw new TypeError(
      `schema must be a plain lower-case SQL identifier, e.g. "lockstep"; got ${JSON.stringify(schema)}`,
    );
  const statementTimeoutMs = options.statementTimeoutMs ?? STATEMENT_TIMEOUT_MS;
  if (!Number.isInteger(statementTimeoutMs) || statementTimeoutMs < 1)
    throw new TypeError(
      `statementTimeoutMs must be a whole number of milliseconds, e.g. 10000; got ${String(statementTimeoutMs)}`,
    );
  const connection: pg.ClientConfig = {
    connectionString: options.connectionString,
    options: `-c search_path=${schema}`,
    // Names the pool's connections in pg_stat_activity (the LISTEN connection is lockstep-listen-<schema>).
    application_name: `lockstep-${schema}`,
    connectionTimeoutMillis: CONNECT_TIMEOUT_MS,
    keepAlive: true,
    keepAliveInitialDelayMillis: KEEPALIVE_AFTER_MS,
  };
  // Migrations first, on a connection of their own without the timeouts: a migration, or the wait for
  // another replica's, may take long.
  await migrate(new pg.Client(connection), schema);
  const pool = new pg.Pool({
    ...connection,
    max: options.maxConnections ?? 10,
    statement_timeout: statementTimeoutMs,
    // A little after the server's own timeout, which leaves the connection usable: this one is for a
    // database that does not answer at all.
    query_timeout: statementTimeoutMs + 1_000,
  });
  // Without a listener, an idle connection's failure (a database restart) would be an uncaught
  // exception, and every replica would exit at once. The pool has dropped that connection already.
  const onError =
    options.onError ??
    ((error: Error) =>
      process.stderr.write(
        `lockstep store: a pooled PostgreSQL connection failed (${error.message}); the next query opens another\n`,
      ));
  pool.on('error', (error) => onError(error));

  // One notification channel per schema and subject, so that tenants (and test runs) do not hear each other.
  const channel = `lockstep_revocations_${schema}`;
  const keysChannel = `lockstep_keys_${schema}`;
  const policyChannel = `lockstep_policy_${schema}`;
  const notifications = pgNotifications(options.connectionString, `lockstep-listen-${schema}`);
  const query = async (sql: string, values: unknown[]): Promise<Record<string, unknown>[]> =>
    (await pool.query(sql, values)).rows as Record<string, unknown>[];
  const transaction = async <T>(write: (run: typeof query) => Promise<T>): Promise<T> => {
    const client = await pool.connect();
    let dropped: Error | undefined;
    try {
      await client.query('BEGIN');
      const result = await write(
        async (sql, values) => (await client.query(sql, values)).rows as Record<string, unknown>[],
      );
      await client.query('COMMIT');
      return result;
    } catch (error) {
      dropped = await rollBack(client, error);
      throw error;
    } finally {
      client.release(dropped);
    }
  };
  /** One revocation write: in a transaction that holds REVOCATION_LOCK, so that positions commit in order. */
  const revocationWrite = async <T>(write: (run: typeof query) => Promise<T>): Promise<T> =>
    transaction(async (run) => {
      await run('SELECT pg_advisory_xact_lock($1)', [REVOCATION_LOCK]);
      return write(run);
    });

  return {
    kind: 'postgres',
    async createJoinToken(record) {
      await query(
        'INSERT INTO join_tokens (token_hash, service, bundle_hash, created_at, expires_at, created_by) VALUES ($1, $2, $3, $4, $5, $6)',
        [record.tokenHash, record.service, record.bundleHash, record.createdAt, record.expiresAt, record.createdBy],
      );
    },
    async redeemJoinToken(tokenHash, now) {
      const [row] = await query(
        'UPDATE join_tokens SET used_at = $1 WHERE token_hash = $2 AND used_at IS NULL AND expires_at > $1 RETURNING *',
        [now, tokenHash],
      );
      if (row !== undefined) return { ok: true, record: joinTokenFromRow(row) };
      const [existing] = await query('SELECT * FROM join_tokens WHERE token_hash = $1', [tokenHash]);
      return { ok: false, reason: redeemRefusal(existing, now) };
    },
    async recordIssuedSvid(record) {
      await query(
        'INSERT INTO issued_svids (serial, spiffe_id, issued_at, expires_at, via) VALUES ($1, $2, $3, $4, $5)',
        [record.serial, record.spiffeId, record.issuedAt, record.expiresAt, record.via],
      );
    },
    async issuedSvids(spiffeId) {
      return (
        await query('SELECT * FROM issued_svids WHERE spiffe_id = $1 ORDER BY issued_at, serial', [spiffeId])
      ).map(issuedSvidFromRow);
    },
    async spendSvid(entry) {
      // A retry for the recorded successor key moves the successor to its certificate (a retired row has no key).
      const spent = await query(
        `INSERT INTO svid_successions (serial, successor, successor_key, at, via) VALUES ($1, $2, $3, $4, $5)
        ON CONFLICT (serial) DO UPDATE SET successor = EXCLUDED.successor
        WHERE svid_successions.successor_key = EXCLUDED.successor_key AND svid_successions.via <> 'retire' RETURNING serial`,
        [entry.serial, entry.successor, entry.successorKey, entry.at, entry.via],
      );
      if (spent.length === 1) return null;
      const [row] = await query('SELECT * FROM svid_successions WHERE serial = $1', [entry.serial]);
      return successionFromRow(row as Parameters<typeof successionFromRow>[0]);
    },
    async svidSuccession(serial) {
      const [row] = await query('SELECT * FROM svid_successions WHERE serial = $1', [serial]);
      return row === undefined ? null : successionFromRow(row);
    },
    async addRevocation(entry) {
      return revocationWrite(async (run) => {
        // A lifted entry holds again, at a new position; one that holds is left as it is.
        const inserted = await run(
          `INSERT INTO revocations (kind, value, reason, actor, at) VALUES ($1, $2, $3, $4, $5)
          ON CONFLICT (kind, value) DO UPDATE SET seq = nextval(pg_get_serial_sequence('revocations', 'seq')), reason = EXCLUDED.reason,
            actor = EXCLUDED.actor, at = EXCLUDED.at, lifted_at = NULL, lifted_by = NULL, lift_reason = NULL
          WHERE revocations.lifted_at IS NOT NULL RETURNING seq`,
          [entry.kind, entry.value, entry.reason, entry.actor, entry.at],
        );
        // Tells every replica's streams at once, on commit (they would otherwise find it on their next re-read).
        if (inserted.length > 0) await run('SELECT pg_notify($1, $2)', [channel, String(inserted[0]?.seq)]);
        const [row] = await run('SELECT * FROM revocations WHERE kind = $1 AND value = $2', [entry.kind, entry.value]);
        return revocationFromRow(row as Record<string, unknown>);
      });
    },
    async revocationsSince(seq) {
      return (await query('SELECT * FROM revocations WHERE seq > $1 ORDER BY seq', [seq])).map(revocationFromRow);
    },
    async liftRevocation(kind, value, lift) {
      return revocationWrite(async (run) => {
        // Of two lifts at once (on any replica), the second finds nothing holding.
        const [row] = await run(
          `UPDATE revocations SET seq = nextval(pg_get_serial_sequence('revocations', 'seq')),
          lifted_at = $3, lifted_by = $4, lift_reason = $5 WHERE kind = $1 AND value = $2 AND lifted_at IS NULL RETURNING *`,
          [kind, value, lift.at, lift.actor, lift.reason],
        );
        if (row === undefined) return null;
        await run('SELECT pg_notify($1, $2)', [channel, String(row.seq)]);
        return revocationFromRow(row);
      });
    },
    async isRevoked(kind, value) {
      return (
        (await query('SELECT 1 FROM revocations WHERE kind = $1 AND value = $2 AND lifted_at IS NULL', [kind, value]))
          .length > 0
      );
    },
    async revocation(kind, value) {
      const [row] = await query('SELECT * FROM revocations WHERE kind = $1 AND value = $2', [kind, value]);
      return row === undefined ? null : revocationFromRow(row);
    },
    async recordHeartbeat(record) {
      await query(
        `INSERT INTO services (spiffe_id, service, routes, policy_version, svid_expires_at, mode, guard_version, first_seen, last_seen, endpoints)
        VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8, $9)
        ON CONFLICT (spiffe_id) DO UPDATE SET service = excluded.service, routes = excluded.routes, policy_version = excluded.policy_version,
          svid_expires_at = excluded.svid_expires_at, mode = excluded.mode, guard_version = excluded.guard_version, last_seen = excluded.last_seen, endpoints = excluded.endpoints`,
        heartbeatValues(record),
      );
    },
    async services() {
      return (await query('SELECT * FROM services ORDER BY spiffe_id', [])).map(serviceFromRow);
    },
    async removeService(spiffeId) {
      return (await query('DELETE FROM services WHERE spiffe_id = $1 RETURNING spiffe_id', [spiffeId])).length === 1;
    },
    async createUser(record) {
      const inserted = await query(
        'INSERT INTO users (username, password_hash, roles, tenant, created_at, disabled_at) VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (username) DO NOTHING RETURNING username',
        userValues(record),
      );
      return inserted.length === 1;
    },
    async user(username) {
      const [row] = await query('SELECT * FROM users WHERE username = $1', [username]);
      return row === undefined ? null : userFromRow(row);
    },
    async users() {
      return (await query('SELECT * FROM users ORDER BY username', [])).map(userFromRow);
    },
    async setPasswordHash(username, passwordHash) {
      await query('UPDATE users SET password_hash = $1 WHERE username = $2', [passwordHash, username]);
    },
    async setUserDisabled(username, at) {
      await query('UPDATE users SET disabled_at = $1 WHERE username = $2', [at, username]);
    },
    async addLoginFailure(key, now, windowMs) {
      const [row] = await query(ADD_LOGIN_FAILURE, [key, now, now - windowMs]);
      return loginFailuresFromRow(row as Record<string, unknown>);
    },
    async reserveLoginAttempt(claims, now) {
      const client = await pool.connect();
      let dropped: Error | undefined;
      try {
        await client.query('BEGIN');
        // One reservation per key at a time, across replicas, taken in one order (no deadlock). A row
        // lock would not do: a key that has no row yet has nothing to lock, and a held attempt
        // must not create one.
        for (const lock of [...new Set(claims.map(({ key }) => loginLockId(schema, key)))].sort((a, b) =>
          a < b ? -1 : a > b ? 1 : 0,
        )) {
          await client.query('SELECT pg_advisory_xact_lock($1::bigint)', [lock.toString()]);
        }
        const rows = (
          await client.query('SELECT * FROM login_failures WHERE key = ANY($1::text[])', [claims.map(({ key }) => key)])
        ).rows as Record<string, unknown>[];
        const current = claims.map(({ key }) => {
          const row = rows.find((candidate) => candidate.key === key);
          return row === undefined ? null : loginFailuresFromRow(row);
        });
        const locked = firstLocked(claims, current, now);
        const counts: LoginFailures[] = [];
        // Relative updates: a success clearing a count meanwhile (it takes no lock) is not undone.
        if (locked === null) {
          for (const { key, limits } of claims) {
            const [row] = (await client.query(ADD_LOGIN_FAILURE, [key, now, now - limits.windowMs])).rows as Record<
              string,
              unknown
            >[];
            counts.push(loginFailuresFromRow(row as Record<string, unknown>));
          }
        }
        await client.query('COMMIT');
        return locked === null
          ? { reserved: true, counts }
          : { reserved: false, lockedClaim: locked.claim, lockedUntil: locked.until };
      } catch (error) {
        dropped = await rollBack(client, error);
        throw error;
      } finally {
        client.release(dropped);
      }
    },
    async forgiveLoginFailure(key) {
      await query('UPDATE login_failures SET failures = failures - 1 WHERE key = $1 AND failures > 0', [key]);
    },
    async loginFailures(key) {
      const [row] = await query('SELECT * FROM login_failures WHERE key = $1', [key]);
      return row === undefined ? null : loginFailuresFromRow(row);
    },
    async clearLoginFailures(key) {
      return ((await pool.query('DELETE FROM login_failures WHERE key = $1', [key])).rowCount ?? 0) > 0;
    },
    async sweepLoginFailures(before) {
      return (await pool.query('DELETE FROM login_failures WHERE last_failure_at < $1', [before])).rowCount ?? 0;
    },
    async upsertOidc(entry) {
      await query(
        `INSERT INTO oidc_models (model, id, payload, grant_id, user_code, uid, expires_at) VALUES ($1, $2, $3, $4, $5, $6, $7)
        ON CONFLICT (model, id) DO UPDATE SET payload = excluded.payload, grant_id = excluded.grant_id, user_code = excluded.user_code, uid = excluded.uid, expires_at = excluded.expires_at`,
        oidcValues(entry),
      );
    },
    async findOidc(model, id) {
      const [row] = await query('SELECT * FROM oidc_models WHERE model = $1 AND id = $2', [model, id]);
      return row === undefined ? null : oidcFromRow(row);
    },
    async findOidcBy(model, field, value) {
      const column = field === 'uid' ? 'uid' : 'user_code';
      const [row] = await query(`SELECT * FROM oidc_models WHERE model = $1 AND ${column} = $2`, [model, value]);
      return row === undefined ? null : oidcFromRow(row);
    },
    async consumeOidc(model, id, at) {
      await query('UPDATE oidc_models SET consumed_at = $1 WHERE model = $2 AND id = $3', [at, model, id]);
    },
    async destroyOidc(model, id) {
      await query('DELETE FROM oidc_models WHERE model = $1 AND id = $2', [model, id]);
    },
    async revokeOidcGrant(grantId) {
      await query('DELETE FROM oidc_models WHERE grant_id = $1', [grantId]);
    },
    async sweepOidc(now) {
      return (
        await query('DELETE FROM oidc_models WHERE expires_at IS NOT NULL AND expires_at < $1 RETURNING 1', [now])
      ).length;
    },
    async appendAudit(source, batch, receivedAt) {
      const client = await pool.connect();
      let dropped: Error | undefined;
      try {
        await client.query('BEGIN');
        // One writer per source at a time, across replicas: the chain has no forks.
        await client.query('SELECT pg_advisory_xact_lock(hashtext($1))', [`lockstep-audit:${source}`]);
        const [head] = (
          await client.query('SELECT seq, hash FROM audit_events WHERE source = $1 ORDER BY seq DESC LIMIT 1', [source])
        ).rows as { seq: string; hash: string }[];
        const [stream] = (
          await client.query('SELECT * FROM audit_streams WHERE source = $1 AND stream = $2', [source, batch.stream])
        ).rows as Record<string, unknown>[];
        const positions = batch.entries.map((entry) => entry.streamSeq);
        const stored = new Map(
          (
            (
              await client.query(
                'SELECT stream_seq, event FROM audit_events WHERE source = $1 AND stream = $2 AND stream_seq = ANY($3::bigint[])',
                [source, batch.stream, positions],
              )
            ).rows as { stream_seq: string; event: string }[]
          ).map((row) => [Number(row.stream_seq), row.event]),
        );
        const plan = planAppend(
          source,
          head === undefined ? null : { seq: Number(head.seq), hash: head.hash },
          stream === undefined ? null : streamStateFromRow(stream),
          (streamSeq) => stored.get(streamSeq) ?? null,
          batch,
          receivedAt,
        );
        for (const row of plan.rows) {
          await client.query(
            'INSERT INTO audit_events (source, seq, stream, stream_seq, received_at, event, txn, prev_hash, hash) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)',
            [
              source,
              row.seq,
              batch.stream,
              row.entry.streamSeq,
              receivedAt,
              row.entry.event,
              row.txn,
              row.prevHash,
              row.hash,
            ],
          );
        }
        const next = plan.stream;
        await client.query(
          `INSERT INTO audit_streams (source, stream, last_stream_seq, dropped, gaps, written, closed_at, first_seen, last_seen) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8)
          ON CONFLICT (source, stream) DO UPDATE SET last_stream_seq = excluded.last_stream_seq, dropped = excluded.dropped, gaps = excluded.gaps,
            written = excluded.written, closed_at = excluded.closed_at, last_seen = GREATEST(audit_streams.last_seen, excluded.last_seen)`,
          [source, batch.stream, next.lastStreamSeq, next.dropped, next.gaps, next.written, next.closedAt, receivedAt],
        );
        await client.query('COMMIT');
        return plan.result;
      } catch (error) {
        dropped = await rollBack(client, error);
        throw error;
      } finally {
        client.release(dropped);
      }
    },
    async auditHeads() {
      return (
        await query('SELECT DISTINCT ON (source) source, seq, hash FROM audit_events ORDER BY source, seq DESC', [])
      ).map((row) => ({ source: String(row.source), seq: Number(row.seq), hash: String(row.hash) }));
    },
    async auditHashesAt(source, seqs) {
      const rows = await query('SELECT seq, hash FROM audit_events WHERE source = $1 AND seq = ANY($2::bigint[])', [
        source,
        [...seqs],
      ]);
      return new Map(rows.map((row) => [Number(row.seq), String(row.hash)]));
    },
    async auditEvents(source, afterSeq, limit) {
      return (
        await query('SELECT * FROM audit_events WHERE source = $1 AND seq > $2 ORDER BY seq LIMIT $3', [
          source,
          afterSeq,
          limit,
        ])
      ).map(auditEventFromRow);
    },
    async auditByTxn(txn) {
      return (await query('SELECT * FROM audit_events WHERE txn = $1 ORDER BY received_at, source, seq', [txn])).map(
        auditEventFromRow,
      );
    },
    async auditStreams() {
      return (await query('SELECT * FROM audit_streams ORDER BY source, first_seen', [])).map(auditStreamFromRow);
    },
    async auditCheckpoints(source) {
      return (
        source === undefined
          ? await query('SELECT * FROM audit_checkpoints ORDER BY source, at', [])
          : await query('SELECT * FROM audit_checkpoints WHERE source = $1 ORDER BY at', [source])
      ).map(auditCheckpointFromRow);
    },
    async auditLegacy() {
      return (await query('SELECT source, through FROM audit_legacy ORDER BY source', [])).map((row) => ({
        source: String(row.source),
        through: Number(row.through),
      }));
    },
    async appendAuditLink(link) {
      await query('INSERT INTO audit_chain (n, at, jws) VALUES ($1, $2, $3)', [link.n, link.at, link.jws]);
    },
    async auditLinks(afterN, limit) {
      return (await query('SELECT n, at, jws FROM audit_chain WHERE n > $1 ORDER BY n LIMIT $2', [afterN, limit])).map(
        auditLinkFromRow,
      );
    },
    async newestAuditLink() {
      const [row] = await query('SELECT n, at, jws FROM audit_chain ORDER BY n DESC LIMIT 1', []);
      return row === undefined ? null : auditLinkFromRow(row);
    },
    async addAlert(alert) {
      await query(
        'INSERT INTO alerts (id, rule, severity, subject, summary, details, at) VALUES ($1, $2, $3, $4, $5, $6, $7)',
        [alert.id, alert.rule, alert.severity, alert.subject, alert.summary, alert.details, alert.at],
      );
    },
    async alerts(limit, since = 0) {
      return (await query('SELECT * FROM alerts WHERE at >= $1 ORDER BY at DESC, id LIMIT $2', [since, limit])).map(
        alertFromRow,
      );
    },
    async recordScan(run) {
      const inserted = await query(
        `INSERT INTO scan_runs (run_id, scanner, trust_domain, started_at, finished_at, exit_code, summary, report, received_at)
        VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT (run_id) DO NOTHING RETURNING run_id`,
        scanRunValues(run),
      );
      if (inserted.length === 1) return 'stored';
      const [existing] = await query('SELECT scanner, report FROM scan_runs WHERE run_id = $1', [run.runId]);
      return scanRepeatOutcome(existing, run);
    },
    async scans(limit) {
      return (
        await query(
          `SELECT ${SCAN_SUMMARY_COLUMNS} FROM scan_runs ORDER BY started_at DESC, received_at DESC, run_id LIMIT $1`,
          [limit],
        )
      ).map(scanSummaryFromRow);
    },
    async scan(runId) {
      const [row] = await query('SELECT * FROM scan_runs WHERE run_id = $1', [runId]);
      return row === undefined ? null : scanRunFromRow(row);
    },
    async keyDocument(name) {
      const [row] = await query('SELECT * FROM key_documents WHERE name = $1 ORDER BY generation DESC LIMIT 1', [name]);
      return row === undefined ? null : keyDocumentFromRow(row);
    },
    async putKeyDocument(document) {
      const { name, generation, kekId, wrappedDek, sealed } = document;
      return transaction(async (run) => {
        // Only the next generation of its name. Two writers of it at once: the second waits for the first's
        // commit on the primary key, then inserts nothing.
        const inserted = await run(
          `INSERT INTO key_documents (name, generation, kek_id, wrapped_dek, sealed, created_at)
          SELECT $1::text, $2::bigint, $3::text, $4::text, $5::text, $6::bigint
          WHERE $2::bigint = (SELECT COALESCE(MAX(generation), -1) + 1 FROM key_documents WHERE name = $1::text)
          ON CONFLICT (name, generation) DO NOTHING RETURNING generation`,
          [name, generation, kekId, wrappedDek, sealed, Date.now()],
        );
        if (inserted.length === 0) return false;
        await run('DELETE FROM key_documents WHERE name = $1 AND generation <= $2', [
          name,
          generation - KEY_DOCUMENT_GENERATIONS_KEPT,
        ]);
        // Every replica hears of it on commit (they would otherwise find it on their next re-read).
        await run('SELECT pg_notify($1, $2)', [keysChannel, name]);
        return true;
      });
    },
    async keyDocumentGenerations() {
      return keyGenerationsFromRows(await query(KEY_DOCUMENT_GENERATIONS, []));
    },
    async keyDocuments() {
      return (await query(ALL_KEY_DOCUMENTS, [])).map(keyDocumentFromRow);
    },
    async rewrapKeyDocument(current, rewrapped) {
      checkRewrap(current, rewrapped);
      const updated = await query(
        `UPDATE key_documents SET kek_id = $1, wrapped_dek = $2
        WHERE name = $3 AND generation = $4 AND kek_id = $5 AND wrapped_dek = $6 AND sealed = $7 RETURNING generation`,
        [
          rewrapped.kekId,
          rewrapped.wrappedDek,
          current.name,
          current.generation,
          current.kekId,
          current.wrappedDek,
          current.sealed,
        ],
      );
      return updated.length === 1;
    },
    async watchRevocations(listener) {
      return notifications.listen(channel, () => listener());
    },
    async watchKeys(listener) {
      return notifications.listen(keysChannel, listener);
    },
    async publishPolicy(set, expectedSeq) {
      checkPublication(set, expectedSeq);
      return transaction(async (run) => {
        // Two publishers of one position: the second waits for the first's commit (on the head row, or on its
        // primary key for the first head), then finds the position taken and writes nothing.
        const moved =
          expectedSeq === 0
            ? await run(
                `INSERT INTO policy_head (id, version, seq, signature) VALUES (1, $1, 1, $2)
                ON CONFLICT (id) DO NOTHING RETURNING seq`,
                [set.version, set.signature],
              )
            : await run(
                `UPDATE policy_head SET version = $1, seq = seq + 1, signature = $2
                WHERE id = 1 AND seq = $3 RETURNING seq`,
                [set.version, set.signature, expectedSeq],
              );
        if (moved.length === 0) return false;
        await run(
          `INSERT INTO policy_sets (version, sources, applied_at, applied_by) VALUES ($1, $2, $3, $4)
          ON CONFLICT (version) DO UPDATE SET sources = excluded.sources, applied_at = excluded.applied_at, applied_by = excluded.applied_by`,
          [set.version, sourcesText(set.sources), set.appliedAt, set.appliedBy],
        );
        // Every replica hears of it on commit (they would otherwise find it on their next re-read).
        await run('SELECT pg_notify($1, $2)', [policyChannel, String(moved[0]?.seq)]);
        return true;
      });
    },
    async policyHead() {
      const [row] = await query(POLICY_HEAD, []);
      return row === undefined ? null : policyHeadFromRow(row);
    },
    async policyHeadSeq() {
      const [row] = await query(POLICY_HEAD_SEQ, []);
      return policyHeadSeqFromRow(row);
    },
    async watchPolicy(listener) {
      return notifications.listen(policyChannel, () => listener());
    },
    async close() {
      await notifications.close();
      await pool.end();
    },
  };
}

/** The advisory lock of one sign-in count (a 64-bit hash of it; a rare collision only makes two counts wait for each other). */
function loginLockId(schema: string, key: string): bigint {
  return createHash('sha256').update(`lockstep-login\0${schema}\0${key}`).digest().readBigInt64BE(0);
}

/**
 * Ends a failed transaction: rolled back, or — when the connection itself failed (a timed-out statement
 * may still be running on it) or the rollback does — returns the error to drop the connection with
 * rather than pool it. PostgreSQL rolls back what a closed connection leaves open.
 */
async function rollBack(client: pg.PoolClient, error: unknown): Promise<Error | undefined> {
  const asError = (failure: unknown) => (failure instanceof Error ? failure : new Error(String(failure)));
  if (isStoreUnavailable(error)) return asError(error);
  return client.query('ROLLBACK').then(() => undefined, asError);
}

async function migrate(client: pg.Client, schema: string): Promise<void> {
  client.on('error', () => {}); // a failure also fails the statement in flight, and is thrown from there
  try {
    await client.connect();
    await client.query('BEGIN');
    await client.query('SELECT pg_advisory_xact_lock($1)', [MIGRATION_LOCK]);
    await client.query(`CREATE SCHEMA IF NOT EXISTS ${schema}`);
    await client.query(
      'CREATE TABLE IF NOT EXISTS lockstep_migrations (version INTEGER PRIMARY KEY, applied_at BIGINT NOT NULL)',
    );
    const applied = new Set(
      (await client.query('SELECT version FROM lockstep_migrations')).rows.map((row: { version: number }) =>
        Number(row.version),
      ),
    );
    for (const migration of MIGRATIONS) {
      if (applied.has(migration.version)) continue;
      await client.query(migration.postgres);
      await client.query('INSERT INTO lockstep_migrations (version, applied_at) VALUES ($1, $2)', [
        migration.version,
        Date.now(),
      ]);
    }
    await client.query('COMMIT');
  } finally {
    // Closing the connection rolls back a migration that failed, and releases its lock.
    await client.end().catch(() => {});
  }
}
