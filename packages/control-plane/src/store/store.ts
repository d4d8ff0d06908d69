/**
 * Everything the control plane persists, behind one small interface with two implementations that
 * pass the same contract tests: SQLite (`node:sqlite`, the embedded default) and PostgreSQL (`pg`,
 * for several replicas). Times are epoch milliseconds; secrets are stored only as hashes.
 */

/** A plain SQL identifier (a schema, a notification channel): lower case, at most 63 characters. */
export const SQL_IDENTIFIER = /^[a-z_][a-z0-9_]{0,62}$/;

export interface JoinTokenRecord {
  /** SHA-256 of the token's secret part, hex. The token itself is never stored. */
  readonly tokenHash: string;
  /** The one service this token may bootstrap. */
  readonly service: string;
  /** SHA-256 of the trust bundle the token pins, base64url (also carried in the token). */
  readonly bundleHash: string;
  readonly createdAt: number;
  readonly expiresAt: number;
  /** Who created it: an admin SPIFFE ID, or `cli` for a local bootstrap. */
  readonly createdBy: string;
  readonly usedAt: number | null;
}

export type RedeemOutcome =
  | { readonly ok: true; readonly record: JoinTokenRecord }
  | { readonly ok: false; readonly reason: 'unknown' | 'used' | 'expired' };

export interface IssuedSvidRecord {
  /** Hex serial number, unique per CA. */
  readonly serial: string;
  readonly spiffeId: string;
  readonly issuedAt: number;
  readonly expiresAt: number;
  /** `join` for a first certificate, `renew` for a renewal, `recover` for a recovery after expiry. */
  readonly via: 'join' | 'renew' | 'recover';
}

/**
 * An SVID spent: replaced by its renewal or recovery, or retired by its workload's clean stop. It can no
 * longer recover (ca/recover.ts), except to its recorded successor key again (a retry after a lost answer).
 */
export interface SvidSuccession {
  /** The spent SVID's serial (lower-case hex). */
  readonly serial: string;
  /** The serial of the newest SVID issued for `successorKey`; '' for a retired SVID. */
  readonly successor: string;
  /**
   * SHA-256 (hex) of the successor's public key (SPKI DER): a retry with the same key is served again.
   * Null for a retired SVID, and for SVIDs spent before this was recorded.
   */
  readonly successorKey: string | null;
  readonly at: number;
  readonly via: 'renew' | 'recover' | 'retire';
}

export type RevocationKind = 'sub' | 'txn' | 'spiffeId' | 'kid';

export interface RevocationRecord {
  /** Monotonic position in the revocation feed; guards resume from the last one they saw. */
  readonly seq: number;
  readonly kind: RevocationKind;
  readonly value: string;
  readonly reason: string;
  readonly actor: string;
  readonly at: number;
  /** Taken back (a revocation made by mistake): the value is accepted again. Null while it holds. */
  readonly lifted: RevocationLift | null;
}

export interface RevocationLift {
  readonly reason: string;
  /** The administrator who lifted it (SPIFFE ID). */
  readonly actor: string;
  readonly at: number;
}

export interface RegisteredRoute {
  readonly method: string;
  readonly template: string;
  readonly action: string;
  readonly public: boolean;
  readonly dryRun: boolean;
  /** The route looks up its object's owner (object-level authorization). Absent from older guards. */
  readonly owner?: boolean;
  /** The route checks its body against a schema. Absent from older guards. */
  readonly validatesBody?: boolean;
}

/** What a guard last reported about itself (registry). */
export interface ServiceRecord {
  readonly spiffeId: string;
  readonly service: string;
  readonly routes: readonly RegisteredRoute[];
  readonly policyVersion: string | null;
  readonly svidExpiresAt: number;
  readonly mode: 'enforce' | 'dry-run';
  readonly guardVersion: string;
  readonly firstSeen: number;
  readonly lastSeen: number;
  /** `host:port` where the guard listens (what the scanner may send to). */
  readonly endpoints: readonly string[];
}

export interface UserRecord {
  /** Also the user's `sub`: lower-case, stable, what policies and revocations name. */
  readonly username: string;
  /** `scrypt$…` (idp/passwords.ts); never the password. */
  readonly passwordHash: string;
  readonly roles: readonly string[];
  readonly tenant: string | null;
  readonly createdAt: number;
  readonly disabledAt: number | null;
}

/** Failed logins counted under one key (`account:<name>`, `address:<network>`, …: see idp/lockout.ts). */
export interface LoginFailures {
  readonly failures: number;
  readonly lastFailureAt: number;
}

/**
 * When a key is locked: after `freeAttempts` failures (`Infinity`: counted, never locked), for
 * `baseLockMs` doubling per further failure, up to `maxLockMs` (store/login-lock.ts).
 */
export interface LoginLimits {
  readonly freeAttempts: number;
  readonly baseLockMs: number;
  readonly maxLockMs: number;
  /** A count whose last failure is older than this starts again. */
  readonly windowMs: number;
}

/** One count that a sign-in attempt is reserved under, and the limits that lock it. */
export interface LoginClaim {
  readonly key: string;
  readonly limits: LoginLimits;
}

/**
 * After `reserveLoginAttempt`: every claim's count with the attempt added, in the claims' order; or,
 * when a claim was locked (and then nothing was counted anywhere), the first locked one and until when.
 */
export type LoginReservation =
  | { readonly reserved: true; readonly counts: readonly LoginFailures[] }
  | { readonly reserved: false; readonly lockedClaim: number; readonly lockedUntil: number };

/** One of oidc-provider's artefacts (session, interaction, code, grant, refresh token, …). */
export interface OidcArtefact {
  readonly model: string;
  readonly id: string;
  /** The artefact as JSON. */
  readonly payload: string;
  readonly grantId: string | null;
  readonly userCode: string | null;
  readonly uid: string | null;
  /** Epoch ms; null for none. */
  readonly expiresAt: number | null;
  readonly consumedAt: number | null;
}

/** One decision event as a guard shipped it: its position in the batch's stream. */
export interface AuditEntry {
  readonly streamSeq: number;
  /** The event as JSON text (stored and hashed exactly as is). */
  readonly event: string;
}

/** A batch of one stream (one sender process, or one sender journal): see the collector. */
export interface AuditBatch {
  readonly stream: string;
  /** What the sender could not keep, cumulative for the stream. */
  readonly dropped: number;
  /** The highest position the sender has assigned so far (absent: the sender does not say). */
  readonly written?: number;
  /** The stream ends with this batch. */
  readonly final?: boolean;
  readonly entries: readonly AuditEntry[];
}

export interface StoredAuditEvent extends AuditEntry {
  readonly source: string;
  /** Position in the source's chain, from 1. */
  readonly seq: number;
  readonly stream: string;
  readonly receivedAt: number;
  /** The event's `txn` field (derived from the event text, indexed). */
  readonly txn: string | null;
  readonly prevHash: string;
  readonly hash: string;
}

export interface AuditStream {
  readonly source: string;
  readonly stream: string;
  readonly lastStreamSeq: number;
  /** What the sender says it dropped (a full journal, a torn line, a failed write, a refused batch), cumulative. */
  readonly dropped: number;
  /** Stream positions never received. */
  readonly gaps: number;
  /** The highest position the sender said it assigned; 0 when the sender does not report it. */
  readonly written: number;
  /** When the sender closed the stream cleanly (its `final` batch); null while open. */
  readonly closedAt: number | null;
  readonly firstSeen: number;
  readonly lastSeen: number;
}

/** A legacy (v1) checkpoint: one source's head, signed; written before the checkpoint chain. */
export interface AuditCheckpoint {
  readonly source: string;
  /** The last position covered (0: nothing yet). */
  readonly seq: number;
  readonly hash: string;
  readonly at: number;
  /** A JWS over { source, seq, hash, at } by the control plane's audit key. */
  readonly signature: string;
}

/** One link of the signed checkpoint chain (the monitor's `checkpoints.ts` says what it holds). */
export interface AuditChainLink {
  /** Its position in the chain, from 1. */
  readonly n: number;
  readonly at: number;
  /** The compact JWS, signed by the audit key. */
  readonly jws: string;
}

export interface AuditAppend {
  readonly accepted: number;
  /** Entries already stored (a retried batch): skipped. */
  readonly duplicates: number;
  /** Stream positions already stored with another text (a forged event took the place): not stored. */
  readonly conflicts: readonly number[];
  /** The source's head the batch was chained onto. */
  readonly base: { readonly seq: number; readonly hash: string };
  readonly head: { readonly seq: number; readonly hash: string };
  /** Stream positions skipped by this batch (missing events), as [from, to] ranges. */
  readonly gaps: readonly (readonly [number, number])[];
  /** The stream's bookkeeping after the batch. */
  readonly stream: {
    readonly lastStreamSeq: number;
    readonly gaps: number;
    readonly dropped: number;
    readonly written: number;
    readonly closedAt: number | null;
  };
}

export interface AlertRecord {
  readonly id: string;
  /** The detection rule that fired, e.g. `lateral-movement`. */
  readonly rule: string;
  readonly severity: 'critical' | 'high' | 'medium' | 'low';
  /** What it is about (a caller, an edge, an account…): alerts of one rule are deduplicated per subject. */
  readonly subject: string;
  readonly summary: string;
  /** JSON: the evidence (event ids, counts, thresholds). */
  readonly details: string;
  readonly at: number;
}

/** One scan run as the scanner posted it (`lockstep scan`), kept whole. */
export interface ScanRunRecord {
  /** The report's run id: unique, the key of the run. */
  readonly runId: string;
  /** The sender's SPIFFE ID, from its certificate (never the report's own `scanner` field). */
  readonly scanner: string;
  readonly trustDomain: string;
  readonly startedAt: number;
  readonly finishedAt: number;
  /** 0 nothing got through; 1 a weak link; 2 incomplete. */
  readonly exitCode: number;
  /** JSON: `{ enforced, weak, inconclusive, skipped }`. */
  readonly summary: string;
  /** JSON: the whole report, stored exactly as given. */
  readonly report: string;
  readonly receivedAt: number;
}

/** A run without its report: what a list of runs shows. */
export type ScanRunSummary = Omit<ScanRunRecord, 'report'>;

/**
 * `stored`: new; `duplicate`: the same sender posted the same report under this run id before
 * (nothing changed); `conflict`: the run id is taken by another report or sender (nothing changed).
 */
export type ScanRecordOutcome = 'stored' | 'duplicate' | 'conflict';

/**
 * One generation of a key document, sealed (ca/sealed.ts): the text encrypted under a data key of its
 * own (DEK), the DEK encrypted under a key-encryption key (KEK) that never enters the store. A store
 * reader learns nothing from it; a store writer cannot change, move or forge one without the KEK.
 */
export interface SealedDocument {
  readonly name: string;
  /** 0 for the first version; +1 per write. */
  readonly generation: number;
  /** The key-encryption key that wrapped the DEK. */
  readonly kekId: string;
  /** The DEK as the KEK wrapped it (base64url). */
  readonly wrappedDek: string;
  /** base64url(iv ‖ ciphertext ‖ tag) of the text. */
  readonly sealed: string;
}

/** How many generations of one key document the store keeps; older ones are deleted as new ones come. */
export const KEY_DOCUMENT_GENERATIONS_KEPT = 10;

/** A policy set as replicas share it (policy/policy-service.ts, shared mode). */
export interface SharedPolicySet {
  /** The set's content version (`PolicySet.version`): the same sources give the same version on every replica. */
  readonly version: string;
  /** The texts by file name (`*.cedarschema`, `*.cedar`), without a directory. */
  readonly sources: Readonly<Record<string, string>>;
  readonly appliedAt: number;
  /** Who published it: a replica and its policy directory. */
  readonly appliedBy: string;
  /**
   * The publishing replica's signature of this publication (policy/policy-head-signature.ts: a compact JWS
   * over the version, the head's position, the sources' digest, appliedBy and appliedAt). Opaque to the store,
   * which keeps it with the head.
   */
  readonly signature: string;
}

/** The policy set in force for every replica sharing the store, and its position. */
export interface PolicyHead extends SharedPolicySet {
  /** 1 for the first publication, +1 per publication. */
  readonly seq: number;
}

export interface ControlPlaneStore {
  /** `sqlite` or `postgres`, for logs and status. */
  readonly kind: 'sqlite' | 'postgres';
  createJoinToken(record: Omit<JoinTokenRecord, 'usedAt'>): Promise<void>;
  /**
   * Marks the token used, atomically: of two concurrent redemptions (on one replica or on two)
   * exactly one succeeds. Expired and used tokens are reported as such.
   */
  redeemJoinToken(tokenHash: string, now: number): Promise<RedeemOutcome>;
  recordIssuedSvid(record: IssuedSvidRecord): Promise<void>;
  issuedSvids(spiffeId: string): Promise<IssuedSvidRecord[]>;
  /**
   * Spends an SVID: records its successor unless one is recorded already, in one statement (so that
   * of two replicas recovering one SVID at once, one wins). Null when this call spent it, or when it was
   * spent (not retired) for the same `successorKey`: then `successor` becomes this call's (a retry whose
   * first answer was lost; `at` and `via` stay). Else the succession recorded before.
   */
  spendSvid(succession: SvidSuccession): Promise<SvidSuccession | null>;
  /** The succession recorded for `serial` (lower-case hex), or null while it is unspent. */
  svidSuccession(serial: string): Promise<SvidSuccession | null>;
  /**
   * Appends to the feed; revoking what is already revoked returns the existing entry. A lifted
   * revocation revoked again holds again, at a new position.
   */
  addRevocation(revocation: Omit<RevocationRecord, 'seq' | 'lifted'>): Promise<RevocationRecord>;
  /**
   * Lifts a revocation that holds, atomically (also across replicas): the entry moves to a new
   * position at the end of the feed, marked lifted, so that every guard — also one resuming from an
   * older position — hears of it, and the revocation itself is no longer in the feed to replay.
   * Null when nothing holds under (kind, value): never revoked, or lifted already.
   */
  liftRevocation(kind: RevocationKind, value: string, lift: RevocationLift): Promise<RevocationRecord | null>;
  /** Every entry after `seq`, in feed order: revocations, and lifted ones at the position of their lift. */
  revocationsSince(seq: number): Promise<RevocationRecord[]>;
  /** True while a revocation holds (lifted ones do not). */
  isRevoked(kind: RevocationKind, value: string): Promise<boolean>;
  /** The entry under (kind, value), holding or lifted (`at`: its latest revocation); null if never revoked. */
  revocation(kind: RevocationKind, value: string): Promise<RevocationRecord | null>;
  /** Inserts or updates a guard's report; `firstSeen` is kept from the first report. */
  recordHeartbeat(record: Omit<ServiceRecord, 'firstSeen'>): Promise<void>;
  /** Every registered guard, by SPIFFE ID. */
  services(): Promise<ServiceRecord[]>;
  /** Removes a guard's entry (it stopped cleanly and said so); false when there was none. */
  removeService(spiffeId: string): Promise<boolean>;
  /** Adds a user; false when the name is taken (nothing is changed then). */
  createUser(record: UserRecord): Promise<boolean>;
  user(username: string): Promise<UserRecord | null>;
  users(): Promise<UserRecord[]>;
  setPasswordHash(username: string, passwordHash: string): Promise<void>;
  /** Marks a user disabled (login refused from then on); `at` null enables again. */
  setUserDisabled(username: string, at: number | null): Promise<void>;
  /**
   * Counts one failed login under `key`, atomically; a count whose last failure is older than
   * `windowMs` starts again at 1. Returns the new count.
   */
  addLoginFailure(key: string, now: number, windowMs: number): Promise<LoginFailures>;
  /**
   * Counts one attempt as a failure in advance under every claim (distinct keys), all or nothing:
   * when any claim is locked at `now`, nothing is written at all — no count, no row. Atomic across
   * parallel callers on any replica (one transaction, serialized per key), so they never get more
   * reservations than the limits allow, which a read followed by a write could.
   */
  reserveLoginAttempt(claims: readonly LoginClaim[], now: number): Promise<LoginReservation>;
  /** Takes one failure back from `key` (never below 0). */
  forgiveLoginFailure(key: string): Promise<void>;
  loginFailures(key: string): Promise<LoginFailures | null>;
  /** Deletes the count; true when there was one. */
  clearLoginFailures(key: string): Promise<boolean>;
  /** Deletes counts whose last failure is older than `before` (they would start again anyway); returns how many. */
  sweepLoginFailures(before: number): Promise<number>;
  /** Inserts or replaces an artefact (consumption is kept only through `consumeOidc`). */
  upsertOidc(artefact: Omit<OidcArtefact, 'consumedAt'>): Promise<void>;
  /** The artefact, expired or not (the adapter decides); null when absent. */
  findOidc(model: string, id: string): Promise<OidcArtefact | null>;
  findOidcBy(model: string, field: 'uid' | 'userCode', value: string): Promise<OidcArtefact | null>;
  consumeOidc(model: string, id: string, at: number): Promise<void>;
  destroyOidc(model: string, id: string): Promise<void>;
  /** Deletes every artefact of a grant (a revoked grant's tokens stop working at once). */
  revokeOidcGrant(grantId: string): Promise<void>;
  /** Deletes artefacts that expired before `now`; returns how many. */
  sweepOidc(now: number): Promise<number>;
  /**
   * Appends a batch of one source's events to its chain, atomically (also across replicas):
   * duplicates of stored (stream, position) pairs are skipped; the stream's bookkeeping (last
   * position, gaps, sender-side drops) is updated. There is no way to change or delete an event.
   */
  appendAudit(source: string, batch: AuditBatch, receivedAt: number): Promise<AuditAppend>;
  /** Every source's last position and hash. */
  auditHeads(): Promise<{ source: string; seq: number; hash: string }[]>;
  /** The stored hashes of a source's events at `seqs` (absent positions are left out). */
  auditHashesAt(source: string, seqs: readonly number[]): Promise<Map<number, string>>;
  /** A source's events after `afterSeq`, in chain order, at most `limit`. */
  auditEvents(source: string, afterSeq: number, limit: number): Promise<StoredAuditEvent[]>;
  /** Every event of one transaction, across sources, in arrival order. */
  auditByTxn(txn: string): Promise<StoredAuditEvent[]>;
  auditStreams(): Promise<AuditStream[]>;
  /** Legacy (v1) per-source checkpoints, kept for verification; none are written any more. */
  auditCheckpoints(source?: string): Promise<AuditCheckpoint[]>;
  /** Each source's last v1-hashed position (events up to it predate the v2 hash). */
  auditLegacy(): Promise<{ source: string; through: number }[]>;
  /** Appends link `link.n` of the checkpoint chain; fails if that position is taken. */
  appendAuditLink(link: AuditChainLink): Promise<void>;
  /** Links after position `afterN`, in order, at most `limit`. */
  auditLinks(afterN: number, limit: number): Promise<AuditChainLink[]>;
  /** The newest link, or null when the chain is empty. */
  newestAuditLink(): Promise<AuditChainLink | null>;
  addAlert(alert: AlertRecord): Promise<void>;
  /** The newest alerts first, at most `limit`, optionally only since `since`. */
  alerts(limit: number, since?: number): Promise<AlertRecord[]>;
  /**
   * Keeps a scan run, idempotently: a run id is written once and never changed (also across
   * replicas). Every run is kept; nothing is deleted.
   */
  recordScan(run: ScanRunRecord): Promise<ScanRecordOutcome>;
  /** The newest runs first (by start, then arrival), at most `limit`, without their reports. */
  scans(limit: number): Promise<ScanRunSummary[]>;
  /** One run with its report; null when unknown. */
  scan(runId: string): Promise<ScanRunRecord | null>;
  /** The newest generation of a key document; null when there is none. */
  keyDocument(name: string): Promise<SealedDocument | null>;
  /**
   * Writes `document` if its generation is the next one of its name (the newest + 1; 0 for a new name), as
   * one compare-and-set, also across replicas: of two writers of one generation exactly one succeeds. False
   * when it is not the next one (someone wrote it first, or a gap); nothing is written then. Generations
   * older than the newest KEY_DOCUMENT_GENERATIONS_KEPT are deleted in the same transaction.
   */
  putKeyDocument(document: SealedDocument): Promise<boolean>;
  /** Each key document's newest generation, by name (cheap: for periodic re-reads). */
  keyDocumentGenerations(): Promise<Map<string, number>>;
  /**
   * Every kept generation of every key document (by name, then generation): a rewrap must reach them all,
   * since older generations hold keys still in use (a ring's previous generation holds its current key as next).
   */
  keyDocuments(): Promise<SealedDocument[]>;
  /**
   * Replaces the wrapping of one stored generation (a DEK re-wrapped under another KEK: `lockstep keys
   * rewrap`), only if the row is still exactly `current`; `rewrapped` is `current` with another `kekId` and
   * `wrappedDek`. False when the row changed or is gone.
   */
  rewrapKeyDocument(current: SealedDocument, rewrapped: SealedDocument): Promise<boolean>;
  /**
   * Calls `listener` with a key document's name soon after any replica sharing this store writes a
   * generation of it (PostgreSQL: LISTEN/NOTIFY), and with null once the listening connection was lost and
   * is back: anything may have changed meanwhile. Absent where one process owns the store (SQLite).
   * Resolves, once listening, to an unsubscribe.
   */
  watchKeys?(listener: (name: string | null) => void): Promise<() => Promise<void>>;
  /**
   * Calls `listener` soon after any replica sharing this store adds a revocation (PostgreSQL:
   * LISTEN/NOTIFY). Absent where one process owns the store (SQLite). Resolves to an unsubscribe.
   */
  watchRevocations?(listener: () => void): Promise<() => Promise<void>>;
  /**
   * Makes `set` the policy head if the head is still at `expectedSeq` (0: no head yet), as one compare-and-set,
   * also across replicas: of two publishers of one position exactly one succeeds, and the head moves to
   * `expectedSeq + 1`. False when the head has moved (nothing is written then). Every set is kept; publishing
   * a version again replaces its row (the sources, when and by whom).
   */
  publishPolicy(set: SharedPolicySet, expectedSeq: number): Promise<boolean>;
  /** The head with its set; null before the first publication. */
  policyHead(): Promise<PolicyHead | null>;
  /** The head's position only, 0 before the first publication (cheap: for periodic re-reads). */
  policyHeadSeq(): Promise<number>;
  /**
   * Calls `listener` soon after any replica sharing this store publishes a policy set (PostgreSQL:
   * LISTEN/NOTIFY), and once the listening connection was lost and is back. Absent where one process owns
   * the store (SQLite). Resolves, once listening, to an unsubscribe.
   */
  watchPolicy?(listener: () => void): Promise<() => Promise<void>>;
  close(): Promise<void>;
}
