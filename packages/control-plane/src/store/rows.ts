/** Row ↔ record mapping shared by both stores (column names are the same in both dialects). */
import type {
  AlertRecord,
  AuditChainLink,
  AuditCheckpoint,
  AuditStream,
  IssuedSvidRecord,
  SvidSuccession,
  JoinTokenRecord,
  LoginFailures,
  OidcArtefact,
  StoredAuditEvent,
  RegisteredRoute,
  RevocationKind,
  RevocationRecord,
  ScanRecordOutcome,
  ScanRunRecord,
  ScanRunSummary,
  ServiceRecord,
  UserRecord,
} from './store.ts';
import type { StreamState } from './audit-append.ts';

type Row = Record<string, unknown>;

// pg returns BIGINT as a string (it may exceed 2^53); our values are epoch milliseconds and sequence
// numbers, far below that, so a checked Number() is exact.
function int(value: unknown, column: string): number {
  const number = typeof value === 'string' ? Number(value) : value;
  if (typeof number !== 'number' || !Number.isSafeInteger(number))
    throw new TypeError(`store: column ${column} is not an integer: ${String(value)}`);
  return number;
}

function text(value: unknown, column: string): string {
  if (typeof value !== 'string') throw new TypeError(`store: column ${column} is not text`);
  return value;
}

export function joinTokenFromRow(row: Row): JoinTokenRecord {
  return {
    tokenHash: text(row.token_hash, 'token_hash'),
    service: text(row.service, 'service'),
    bundleHash: text(row.bundle_hash, 'bundle_hash'),
    createdAt: int(row.created_at, 'created_at'),
    expiresAt: int(row.expires_at, 'expires_at'),
    createdBy: text(row.created_by, 'created_by'),
    usedAt: row.used_at === null || row.used_at === undefined ? null : int(row.used_at, 'used_at'),
  };
}

export function successionFromRow(row: Row): SvidSuccession {
  const via = text(row.via, 'via');
  if (via !== 'renew' && via !== 'recover' && via !== 'retire') throw new TypeError(`store: unknown succession ${via}`);
  return {
    serial: text(row.serial, 'serial'),
    successor: text(row.successor, 'successor'),
    successorKey:
      row.successor_key === null || row.successor_key === undefined ? null : text(row.successor_key, 'successor_key'),
    at: int(row.at, 'at'),
    via,
  };
}

export function issuedSvidFromRow(row: Row): IssuedSvidRecord {
  const via = text(row.via, 'via');
  if (via !== 'join' && via !== 'renew' && via !== 'recover') throw new TypeError(`store: unknown issuance ${via}`);
  return {
    serial: text(row.serial, 'serial'),
    spiffeId: text(row.spiffe_id, 'spiffe_id'),
    issuedAt: int(row.issued_at, 'issued_at'),
    expiresAt: int(row.expires_at, 'expires_at'),
    via,
  };
}

export function revocationFromRow(row: Row): RevocationRecord {
  return {
    seq: int(row.seq, 'seq'),
    kind: text(row.kind, 'kind') as RevocationKind,
    value: text(row.value, 'value'),
    reason: text(row.reason, 'reason'),
    actor: text(row.actor, 'actor'),
    at: int(row.at, 'at'),
    lifted:
      row.lifted_at === null || row.lifted_at === undefined
        ? null
        : {
            at: int(row.lifted_at, 'lifted_at'),
            actor: text(row.lifted_by, 'lifted_by'),
            reason: text(row.lift_reason, 'lift_reason'),
          },
  };
}

/** Why a join token that could not be redeemed was refused. */
export function redeemRefusal(row: Row | undefined, now: number): 'unknown' | 'used' | 'expired' {
  if (row === undefined) return 'unknown';
  if (row.used_at !== null && row.used_at !== undefined) return 'used';
  return int(row.expires_at, 'expires_at') <= now ? 'expired' : 'used';
}

export function serviceFromRow(row: Row): ServiceRecord {
  const mode = text(row.mode, 'mode');
  if (mode !== 'enforce' && mode !== 'dry-run') throw new TypeError(`store: unknown mode ${mode}`);
  return {
    spiffeId: text(row.spiffe_id, 'spiffe_id'),
    service: text(row.service, 'service'),
    routes: JSON.parse(text(row.routes, 'routes')) as RegisteredRoute[],
    policyVersion:
      row.policy_version === null || row.policy_version === undefined
        ? null
        : text(row.policy_version, 'policy_version'),
    svidExpiresAt: int(row.svid_expires_at, 'svid_expires_at'),
    mode,
    guardVersion: text(row.guard_version, 'guard_version'),
    firstSeen: int(row.first_seen, 'first_seen'),
    lastSeen: int(row.last_seen, 'last_seen'),
    endpoints: JSON.parse(text(row.endpoints ?? '[]', 'endpoints')) as string[],
  };
}

/** The values of a heartbeat in the column order both stores use. */
export function heartbeatValues(record: Omit<ServiceRecord, 'firstSeen'>): unknown[] {
  return [
    record.spiffeId,
    record.service,
    JSON.stringify(record.routes),
    record.policyVersion,
    record.svidExpiresAt,
    record.mode,
    record.guardVersion,
    record.lastSeen,
    JSON.stringify(record.endpoints),
  ];
}

function optionalInt(value: unknown, column: string): number | null {
  return value === null || value === undefined ? null : int(value, column);
}

function optionalText(value: unknown, column: string): string | null {
  return value === null || value === undefined ? null : text(value, column);
}

export function userFromRow(row: Row): UserRecord {
  return {
    username: text(row.username, 'username'),
    passwordHash: text(row.password_hash, 'password_hash'),
    roles: JSON.parse(text(row.roles, 'roles')) as string[],
    tenant: optionalText(row.tenant, 'tenant'),
    createdAt: int(row.created_at, 'created_at'),
    disabledAt: optionalInt(row.disabled_at, 'disabled_at'),
  };
}

/** The values of a new user in the column order both stores use. */
export function userValues(record: UserRecord): (string | number | null)[] {
  return [
    record.username,
    record.passwordHash,
    JSON.stringify(record.roles),
    record.tenant,
    record.createdAt,
    record.disabledAt,
  ];
}

export function loginFailuresFromRow(row: Row): LoginFailures {
  return { failures: int(row.failures, 'failures'), lastFailureAt: int(row.last_failure_at, 'last_failure_at') };
}

export function oidcFromRow(row: Row): OidcArtefact {
  return {
    model: text(row.model, 'model'),
    id: text(row.id, 'id'),
    payload: text(row.payload, 'payload'),
    grantId: optionalText(row.grant_id, 'grant_id'),
    userCode: optionalText(row.user_code, 'user_code'),
    uid: optionalText(row.uid, 'uid'),
    expiresAt: optionalInt(row.expires_at, 'expires_at'),
    consumedAt: optionalInt(row.consumed_at, 'consumed_at'),
  };
}

/** The values of an upserted artefact in the column order both stores use. */
export function oidcValues(artefact: Omit<OidcArtefact, 'consumedAt'>): (string | number | null)[] {
  return [
    artefact.model,
    artefact.id,
    artefact.payload,
    artefact.grantId,
    artefact.userCode,
    artefact.uid,
    artefact.expiresAt,
  ];
}

export function auditEventFromRow(row: Row): StoredAuditEvent {
  return {
    source: text(row.source, 'source'),
    seq: int(row.seq, 'seq'),
    stream: text(row.stream, 'stream'),
    streamSeq: int(row.stream_seq, 'stream_seq'),
    receivedAt: int(row.received_at, 'received_at'),
    event: text(row.event, 'event'),
    txn: optionalText(row.txn, 'txn'),
    prevHash: text(row.prev_hash, 'prev_hash'),
    hash: text(row.hash, 'hash'),
  };
}

export function auditStreamFromRow(row: Row): AuditStream {
  return {
    source: text(row.source, 'source'),
    stream: text(row.stream, 'stream'),
    lastStreamSeq: int(row.last_stream_seq, 'last_stream_seq'),
    dropped: int(row.dropped, 'dropped'),
    gaps: int(row.gaps, 'gaps'),
    written: int(row.written, 'written'),
    closedAt: optionalInt(row.closed_at, 'closed_at'),
    firstSeen: int(row.first_seen, 'first_seen'),
    lastSeen: int(row.last_seen, 'last_seen'),
  };
}

/** What `planAppend` needs of a stored stream. */
export function streamStateFromRow(row: Row): StreamState {
  const { lastStreamSeq, gaps, dropped, written, closedAt } = auditStreamFromRow({
    source: '',
    stream: '',
    first_seen: 0,
    last_seen: 0,
    ...row,
  });
  return { lastStreamSeq, gaps, dropped, written, closedAt };
}

export function auditLinkFromRow(row: Row): AuditChainLink {
  return { n: int(row.n, 'n'), at: int(row.at, 'at'), jws: text(row.jws, 'jws') };
}

export function auditCheckpointFromRow(row: Row): AuditCheckpoint {
  return {
    source: text(row.source, 'source'),
    seq: int(row.seq, 'seq'),
    hash: text(row.hash, 'hash'),
    at: int(row.at, 'at'),
    signature: text(row.signature, 'signature'),
  };
}

export function alertFromRow(row: Row): AlertRecord {
  const severity = text(row.severity, 'severity');
  if (!['critical', 'high', 'medium', 'low'].includes(severity))
    throw new TypeError(`store: unknown severity ${severity}`);
  return {
    id: text(row.id, 'id'),
    rule: text(row.rule, 'rule'),
    severity: severity as AlertRecord['severity'],
    subject: text(row.subject, 'subject'),
    summary: text(row.summary, 'summary'),
    details: text(row.details, 'details'),
    at: int(row.at, 'at'),
  };
}

/** The columns of a run without its report (the list of runs never reads the big column). */
export const SCAN_SUMMARY_COLUMNS =
  'run_id, scanner, trust_domain, started_at, finished_at, exit_code, summary, received_at';

export function scanSummaryFromRow(row: Row): ScanRunSummary {
  return {
    runId: text(row.run_id, 'run_id'),
    scanner: text(row.scanner, 'scanner'),
    trustDomain: text(row.trust_domain, 'trust_domain'),
    startedAt: int(row.started_at, 'started_at'),
    finishedAt: int(row.finished_at, 'finished_at'),
    exitCode: int(row.exit_code, 'exit_code'),
    summary: text(row.summary, 'summary'),
    receivedAt: int(row.received_at, 'received_at'),
  };
}

export function scanRunFromRow(row: Row): ScanRunRecord {
  return { ...scanSummaryFromRow(row), report: text(row.report, 'report') };
}

/** The values of a new run in the column order both stores use. */
export function scanRunValues(run: ScanRunRecord): (string | number)[] {
  return [
    run.runId,
    run.scanner,
    run.trustDomain,
    run.startedAt,
    run.finishedAt,
    run.exitCode,
    run.summary,
    run.report,
    run.receivedAt,
  ];
}

/** What a post of `run` was, given the row its run id already had: a repeat of the same, or another run. */
export function scanRepeatOutcome(existing: Row | undefined, run: ScanRunRecord): ScanRecordOutcome {
  if (existing === undefined) throw new TypeError(`store: scan run ${run.runId} neither inserted nor found`);
  return text(existing.scanner, 'scanner') === run.scanner && text(existing.report, 'report') === run.report
    ? 'duplicate'
    : 'conflict';
}
