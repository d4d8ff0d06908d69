/**
 * The detector: the rules of rules.ts applied to what the monitor sees — every guard's decisions (as
 * the collector stores them), every sign-in at the identity provider, the registry (and the guards'
 * reports of outages) and the trail — raising alerts that are stored, handed to listeners (the
 * webhook, the dashboard) and deduplicated per rule and subject.
 */
import { randomUUID } from 'node:crypto';
import type { JSONWebKeySet } from 'jose';
import { parseSpiffeId } from '@lockstep/guard';
import {
  AUDIT_STREAM_SILENCE_MS,
  type AlertRecord,
  type AuditAppend,
  type AuditStream,
  type ControlPlaneStore,
  type LoginEvent,
  type RecoveryReuse,
  type UnreachableReport,
} from '@lockstep/control-plane';
import { isProbeEvent } from './probes.ts';
import { DEFAULT_THRESHOLDS, OUTAGE_REASONS, RULES, type RuleId, type Thresholds } from './rules.ts';
import type { Incident } from './checkpoints.ts';
import { verifyTrail } from './verify.ts';

type Event = Record<string, unknown>;

export interface DetectorOptions {
  readonly store: ControlPlaneStore;
  readonly thresholds?: Partial<Thresholds>;
  /** The version each service's guard should enforce (the control plane's policy service). */
  readonly expectedPolicyVersion?: (service: string) => Promise<string | null>;
  /** Checkpoint keys: with them, the sweep also verifies the trail (every `verifyEveryMs`, default 10 min). */
  readonly auditKeys?: () => JSONWebKeySet;
  readonly verifyEveryMs?: number;
  /** How often the registry, the streams and the transactions are looked at (default 5 s). */
  readonly sweepMs?: number;
  readonly now?: () => number;
  readonly onError?: (error: Error) => void;
}

export interface Detector {
  /** Decisions one source shipped (wire to the collector's `onAppended`). */
  observeDecisions(batch: { source: string; service: string; result: AuditAppend; events: readonly Event[] }): void;
  /** A sign-in at the identity provider (wire to `subscribeLogins`). */
  observeLogin(event: LoginEvent): void;
  /** A guard's report that it could not reach the control plane (wire to the server's `onUnreachable` hook). */
  observeUnreachable(report: UnreachableReport): void;
  /** Tampering the checkpointer found (wire to its `onIncident`). */
  observeTrailIncident(incident: Incident): void;
  /** An SVID presented for recovery after it was spent (wire to the control plane's `onRecoveryReuse`). */
  observeRecoveryReuse(reuse: RecoveryReuse): void;
  /** Registry, streams, transactions, trail: the timer calls it; tests may too. */
  sweep(): Promise<void>;
  onAlert(listener: (alert: AlertRecord) => void): () => void;
  stop(): void;
}

const serviceOf = (spiffeId: unknown) =>
  typeof spiffeId === 'string' ? (parseSpiffeId(spiffeId)?.service ?? null) : null;
const iso = (time: number) => new Date(time).toISOString();
/** How an SVID presented for recovery had been spent. */
const SPENT: Record<RecoveryReuse['via'], string> = {
  renew: 'renewed',
  recover: 'recovered',
  retire: 'retired (its workload stopped cleanly)',
};
const REVOKED = new Set(['LOCKSTEP_ERR_TXN_TOKEN_REVOKED', 'LOCKSTEP_ERR_PEER_REVOKED']);
const UNTRUSTED = new Set([
  'LOCKSTEP_ERR_PEER_CERT_MISSING',
  'LOCKSTEP_ERR_PEER_UNTRUSTED',
  'LOCKSTEP_ERR_PEER_FOREIGN_TRUST_DOMAIN',
  'LOCKSTEP_ERR_PEER_ID_INVALID',
]);
const OUTAGE = new Set(OUTAGE_REASONS);
/**
 * Refusals that say nothing about the caller: the control plane or the service could not be
 * reached (also the service behind a sidecar), or the guard had no policy yet. They count toward no
 * caller's denial burst.
 */
const NOT_THE_CALLERS_DOING = new Set([
  ...OUTAGE_REASONS,
  'SERVICE_UNAVAILABLE',
  'LOCKSTEP_ERR_NO_POLICY',
  'LOCKSTEP_ERR_UPSTREAM_UNAVAILABLE',
  'LOCKSTEP_ERR_UPSTREAM_TIMEOUT',
]);
const TXN_MEMORY = 10_000;
/** Outages kept per reporting service; an older one not reported yet is reported as it goes. */
const OUTAGES_PER_SERVICE = 10;
/** How far apart the clocks of guards and monitor may be when events' own times are compared. */
const CLOCK_SKEW_MS = 5_000;
/**
 * An edge's refusal older than this on arrival is no word of an outage (it stays in the trail). A
 * spool keeps events for as long as they cannot be sent — no age bounds it — so this bounds what a
 * workload can claim with its events' times; an outage longer than this is told whole by the
 * guards' heartbeats, whose window the control plane cuts by its own clock.
 */
const OUTAGE_EVIDENCE_MAX_AGE_MS = 24 * 60 * 60_000;
/** The monitor's own timer runs this often; a longer gap: this process was not running (stopped, starved). */
const TICK_MS = 1_000;
const PAUSED_AFTER_MS = 5_000;

/** One event of a transaction: where it was decided, who called, and when (its own clock and ours). */
interface Hop {
  readonly service: string;
  /** The caller's SPIFFE ID (the source its own decisions come from), and its service. */
  readonly callerId: string | null;
  readonly caller: string | null;
  readonly time: number;
  readonly requestId: string;
  readonly arrivedAt: number;
  reported: boolean;
}

/**
 * One outage of the control plane as one service told it, by its clock. Each service's word is kept
 * apart (a workload can write what it likes about itself, nothing about others) and merged with
 * the other services' word of the same time only for the report.
 */
interface Outage {
  readonly service: string;
  from: number;
  to: number;
  reports: number;
  refused: number;
  lastRequestId: string | null;
  /** Our clock: this service's last word about it. It is reported once that word is `outageSettleMs` old. */
  heardAt: number;
  reported: boolean;
}

export function createDetector(options: DetectorOptions): Detector {
  const { store } = options;
  const limits: Thresholds = { ...DEFAULT_THRESHOLDS, ...options.thresholds };
  const now = options.now ?? Date.now;
  const startedAt = now();
  const severity = new Map(RULES.map((rule) => [rule.id, rule.severity]));
  const listeners = new Set<(alert: AlertRecord) => void>();
  const lastRaised = new Map<string, number>();
  const windows = new Map<string, number[]>();
  const loginAccounts = new Map<string, Map<string, number>>();
  const allowedEdges = new Set<string>();
  const txns = new Map<string, Hop[]>();
  /** Transactions with new events, or with a hop not judged yet: only they are looked at again. */
  const unjudged = new Set<string>();
  const driftSince = new Map<string, number>();
  const droppedSeen = new Map<string, number>();
  /** Guards reported silent: SPIFFE ID → when they were last heard of then. */
  const silent = new Map<string, number>();
  /** Reporting service → its outages, oldest first. */
  const outages = new Map<string, Outage[]>();
  let lastVerify = 0;
  const pending: Promise<unknown>[] = [];

  // Silence means something only once this process has been running long enough to hear a report:
  // not after its start, nor after it was paused (SIGSTOP, a starved event loop) — guards that could
  // not reach it then were not silent, it was deaf.
  let awakeSince = startedAt;
  let lastTick = startedAt;
  function noticePause(): void {
    const at = now();
    if (at - lastTick > PAUSED_AFTER_MS) awakeSince = at;
    lastTick = at;
  }
  const ticker = setInterval(noticePause, TICK_MS);
  ticker.unref();

  /** Emits unless every one of `cooldownKeys` (by default the subject) had an alert of `rule` within the cooldown. */
  function raise(
    rule: RuleId,
    subject: string,
    summary: string,
    details: Record<string, unknown>,
    cooldownKeys: readonly string[] = [subject],
  ): void {
    const keys = cooldownKeys.map((key) => `${rule} ${key}`);
    const at = now();
    if (keys.every((key) => at - (lastRaised.get(key) ?? -Infinity) < limits.cooldownMs)) return;
    for (const key of keys) lastRaised.set(key, at);
    emit(rule, subject, summary, details, at);
  }

  /** Stores and hands out an alert, without the cooldown (for rules that keep their own state). */
  function emit(rule: RuleId, subject: string, summary: string, details: Record<string, unknown>, at = now()): void {
    const alert: AlertRecord = {
      id: randomUUID(),
      rule,
      severity: severity.get(rule) ?? 'medium',
      subject,
      summary,
      details: JSON.stringify(details),
      at,
    };
    const stored = store.addAlert(alert).then(
      () => {
        for (const listener of listeners) listener(alert);
      },
      (error: Error) => options.onError?.(error),
    );
    pending.push(stored);
    void stored.finally(() => pending.splice(pending.indexOf(stored), 1));
  }

  /** Counts one occurrence for `key` within `windowMs`; returns the count in the window. */
  function count(key: string, windowMs: number): number {
    const at = now();
    const times = (windows.get(key) ?? []).filter((time) => at - time < windowMs);
    times.push(at);
    windows.set(key, times);
    return times.length;
  }

  /** An event's own time (its guard's clock); ours if it has none that parses. */
  const eventTime = (event: Event) => {
    const time = Date.parse(String(event.time));
    return Number.isFinite(time) ? time : now();
  };

  function observeDecisions(batch: {
    source: string;
    service: string;
    result: AuditAppend;
    events: readonly Event[];
  }): void {
    if (batch.result.gaps.length > 0) {
      const missing = batch.result.gaps.reduce((sum, [from, to]) => sum + to - from + 1, 0);
      raise(
        'audit-gap',
        batch.source,
        `${missing} decision event${missing === 1 ? '' : 's'} of ${batch.service} never arrived`,
        { source: batch.source, gaps: batch.result.gaps },
      );
    }
    for (const event of batch.events) {
      // A scanner's probes are attacks on purpose: the Scans page reports them, and no rule counts them
      // (what the guard could not verify as a probe is counted like anyone else's request).
      if (isProbeEvent(event)) continue;
      const callerService = serviceOf(event.caller);
      const reason = String(event.reason);
      const denied = event.decision === 'deny';
      if (typeof event.txn === 'string') {
        let seen = txns.get(event.txn);
        if (seen === undefined) {
          if (txns.size >= TXN_MEMORY) {
            const oldest = txns.keys().next().value as string;
            txns.delete(oldest);
            unjudged.delete(oldest);
          }
          txns.set(event.txn, (seen = []));
        }
        seen.push({
          service: String(event.service),
          callerId: typeof event.caller === 'string' ? event.caller : null,
          caller: callerService,
          time: eventTime(event),
          requestId: String(event.requestId),
          arrivedAt: now(),
          reported: false,
        });
        unjudged.add(event.txn);
      }
      if (denied && OUTAGE.has(reason)) {
        // Its own clock, but no later than now (give or take the skew), and not from long ago.
        const at = now();
        const time = Math.min(eventTime(event), at + CLOCK_SKEW_MS);
        if (time >= at - OUTAGE_EVIDENCE_MAX_AGE_MS) {
          unreachableFrom(String(event.service), time, time, String(event.requestId));
        }
      }
      if (callerService !== null) {
        const edge = `${callerService}→${String(event.service)}`;
        if (!denied) allowedEdges.add(edge);
        else if (reason === 'LOCKSTEP_ERR_DENIED' && !allowedEdges.has(edge)) {
          raise(
            'lateral-movement',
            edge,
            `${callerService} called ${String(event.service)} (${String(event.action)}), which the policy does not allow and which never happened before`,
            { edge, action: event.action, requestId: event.requestId, sub: event.sub, txn: event.txn },
          );
        }
      }
      // A service behind an edge that failed (its 5xx, as the edge records it) is not the caller's doing either.
      if (denied && !NOT_THE_CALLERS_DOING.has(reason) && !/^DOWNSTREAM_5\d\d$/.test(reason)) {
        // Without a caller's SVID: a user at an edge that records its own decisions, or nobody known.
        const service = String(event.service);
        const caller =
          typeof event.caller === 'string'
            ? event.caller
            : typeof event.sub === 'string'
              ? `user ${event.sub} at ${service}`
              : `unauthenticated callers of ${service}`;
        const denials = count(`denials ${caller}`, limits.denialWindowMs);
        if (denials >= limits.denialBurst)
          raise(
            'denial-burst',
            caller,
            `${denials} requests from ${caller} refused within ${limits.denialWindowMs / 1000} s`,
            { caller, denials, lastRequestId: event.requestId, lastReason: reason },
          );
      }
      if (REVOKED.has(reason)) {
        raise(
          'use-after-revocation',
          String(event.sub ?? event.caller ?? event.txn ?? 'unknown'),
          `a revoked ${reason === 'LOCKSTEP_ERR_PEER_REVOKED' ? 'workload' : 'user, transaction or key'} was used at ${String(event.service)}`,
          { service: event.service, caller: event.caller, sub: event.sub, txn: event.txn, requestId: event.requestId },
        );
      }
      if (reason === 'LOCKSTEP_ERR_TXN_TOKEN_EXPIRED') {
        raise(
          'txn-replay',
          String(event.txn ?? event.requestId),
          `an expired Txn-Token was presented at ${String(event.service)} by ${String(event.caller)}`,
          { service: event.service, caller: event.caller, requestId: event.requestId },
        );
      }
      if (UNTRUSTED.has(reason)) {
        const attempts = count(`untrusted ${String(event.service)}`, limits.denialWindowMs);
        if (attempts >= limits.untrustedCertificates)
          raise(
            'untrusted-certificate',
            String(event.service),
            `${attempts} requests to ${String(event.service)} without a trusted client certificate within ${limits.denialWindowMs / 1000} s`,
            { service: event.service, lastReason: reason, lastRequestId: event.requestId },
          );
      }
    }
  }

  function observeLogin(event: LoginEvent): void {
    if (event.outcome !== 'failure') return;
    const failures = count(`login ${event.username}`, limits.loginWindowMs);
    if (failures >= limits.bruteForceFailures)
      raise(
        'brute-force',
        event.username,
        `${failures} failed sign-ins for ${event.username} within ${limits.loginWindowMs / 60_000} min`,
        { account: event.username, failures, lastIp: event.ip },
      );
    const accounts = loginAccounts.get(event.ip) ?? new Map<string, number>();
    const at = now();
    accounts.set(event.username, at);
    for (const [account, time] of accounts) if (at - time >= limits.loginWindowMs) accounts.delete(account);
    loginAccounts.set(event.ip, accounts);
    if (accounts.size >= limits.sprayingAccounts)
      raise(
        'password-spraying',
        event.ip,
        `failed sign-ins for ${accounts.size} different accounts from ${event.ip} within ${limits.loginWindowMs / 60_000} min`,
        { ip: event.ip, accounts: [...accounts.keys()].slice(0, 50) },
      );
  }

  /** Evidence that `service` could not reach the control plane from `from` to `to` (its clock, epoch ms). */
  function unreachableFrom(service: string, from: number, to: number, refusedRequestId: string | null): void {
    const gap = limits.outageGapMs;
    const known = outages.get(service) ?? [];
    outages.set(service, known);
    let outage = known.find((entry) => from <= entry.to + gap && to >= entry.from - gap);
    if (outage === undefined) {
      outage = { service, from, to, reports: 0, refused: 0, lastRequestId: null, heardAt: now(), reported: false };
      known.push(outage);
      // A service with many outages of its own forgets the oldest, telling it first if it was not told.
      const oldest = known.length > OUTAGES_PER_SERVICE ? known.shift() : undefined;
      if (oldest !== undefined && !oldest.reported) reportOutage(oldest);
    }
    outage.from = Math.min(outage.from, from);
    outage.to = Math.max(outage.to, to);
    if (refusedRequestId === null) outage.reports += 1;
    else {
      outage.refused += 1;
      outage.lastRequestId = refusedRequestId;
    }
    // Once reported, this service's later word of the same outage (a slow spool) is absorbed.
    outage.heardAt = now();
  }

  /**
   * Reports `first` with every other service's outage of the same time not reported yet: one alert
   * names all who could not reach the control plane then. Their word is not waited for (a workload
   * that keeps talking of an outage would hold the others' alert back), and the cooldown is per
   * service: a workload that floods with outages of its own silences alerts that name only itself.
   */
  function reportOutage(first: Outage): void {
    const gap = limits.outageGapMs;
    const told = [
      first,
      ...[...outages.values()]
        .flat()
        .filter(
          (entry) => entry !== first && !entry.reported && entry.from <= first.to + gap && entry.to >= first.from - gap,
        ),
    ];
    for (const entry of told) entry.reported = true;
    const services = [...new Set(told.map((entry) => entry.service))].sort();
    const from = Math.min(...told.map((entry) => entry.from));
    const to = Math.max(...told.map((entry) => entry.to));
    const refused = told.reduce((sum, entry) => sum + entry.refused, 0);
    const refusals =
      refused === 0 ? '' : `; ${refused} request${refused === 1 ? ' was' : 's were'} refused for want of it`;
    raise(
      'control-plane-unreachable',
      `control plane, ${iso(from)}`,
      `the control plane was unreachable from ${services.join(', ')} ` +
        `between ${iso(from)} and ${iso(to)} (${Math.round((to - from) / 1000)} s)${refusals}: check its log and host for a stop, ` +
        'crash or stall, and the network between the guards and it',
      {
        services,
        from: iso(from),
        to: iso(to),
        refusedRequests: refused,
        heartbeatReports: told.reduce((sum, entry) => sum + entry.reports, 0),
        lastRequestId: told.findLast((entry) => entry.lastRequestId !== null)?.lastRequestId ?? null,
        // Each service's own word: the window above is their union.
        by: told.map((entry) => ({
          service: entry.service,
          from: iso(entry.from),
          to: iso(entry.to),
          heartbeatReports: entry.reports,
          refusedRequests: entry.refused,
        })),
      },
      services,
    );
  }

  /**
   * Whether every decision the hop's caller took up to the hop's time has arrived, so that an event of
   * the transaction at the caller, absent now, never happened: each of the caller's streams alive then
   * has delivered all it numbered (no gaps, nothing written and unsent), and one was heard from after
   * the hop's time (by the events' clocks, give or take the skew). A caller whose decisions never
   * reach the collector is judged `txnSettleMs` after the hop arrived: nothing more can come.
   */
  function heardThrough(streamsOf: Map<string, AuditStream[]>, hop: Hop, at: number): boolean {
    const alive = (streamsOf.get(hop.callerId ?? '') ?? []).filter((stream) =>
      stream.closedAt === null
        ? stream.lastSeen >= hop.time - AUDIT_STREAM_SILENCE_MS
        : stream.closedAt >= hop.time - CLOCK_SKEW_MS,
    );
    if (alive.length === 0) return at - hop.arrivedAt >= limits.txnSettleMs;
    return (
      alive.every((stream) => stream.gaps === 0 && stream.lastStreamSeq >= stream.written) &&
      alive.some((stream) => stream.lastSeen >= hop.time + CLOCK_SKEW_MS)
    );
  }

  /** The services whose guards recorded an event of `txn`, as stored (also before this process started). */
  async function storedReach(txn: string): Promise<Set<string>> {
    const events = (await store.auditByTxn(txn)).map((stored) => JSON.parse(stored.event) as Event);
    return new Set(events.filter((event) => !isProbeEvent(event)).map((event) => String(event.service)));
  }

  async function sweep(): Promise<void> {
    noticePause();
    const at = now();
    const streams = await store.auditStreams();
    const streamsOf = Map.groupBy(streams, (stream) => stream.source);
    // A transaction's token may come only from the workloads its chain reached (or its originator).
    // The guards of one chain ship on their own schedules, so events arrive in any order: a hop whose
    // caller has no event of the transaction is judged only once the caller's own decisions up to then
    // have all arrived (heardThrough), and against the store before it is called a replay.
    for (const txn of [...unjudged]) {
      unjudged.delete(txn);
      const seen = txns.get(txn);
      if (seen === undefined) continue;
      const ordered = [...seen].sort((a, b) => a.time - b.time);
      const reached = new Set(ordered.map((hop) => hop.service));
      const originator = ordered.find((hop) => hop.caller !== null)?.caller;
      let stored: Set<string> | null = null;
      for (const hop of ordered) {
        if (hop.reported || hop.caller === null || hop.caller === originator || reached.has(hop.caller)) continue;
        if (!heardThrough(streamsOf, hop, at)) {
          unjudged.add(txn);
          continue;
        }
        stored ??= await storedReach(txn);
        if (stored.has(hop.caller)) continue;
        hop.reported = true;
        raise(
          'txn-replay',
          txn,
          `${hop.caller} presented the Txn-Token of transaction ${txn} at ${hop.service}, ` +
            `but the transaction never reached ${hop.caller}`,
          {
            txn,
            caller: hop.caller,
            service: hop.service,
            requestId: hop.requestId,
            chain: ordered.map((entry) => `${entry.caller ?? 'edge'}→${entry.service}`),
          },
        );
      }
    }
    const registered = await store.services();
    // The registry: drift, SVIDs about to expire, dry-run.
    for (const service of registered) {
      const expected = (await options.expectedPolicyVersion?.(service.service)) ?? null;
      if (expected !== null && service.policyVersion !== expected) {
        const since = driftSince.get(service.spiffeId) ?? at;
        driftSince.set(service.spiffeId, since);
        if (at - since > limits.driftAfterMs)
          raise(
            'policy-drift',
            service.spiffeId,
            `${service.service} enforces ${service.policyVersion?.slice(0, 12) ?? 'no policy'}, not ${expected.slice(0, 12)}, for ${Math.round((at - since) / 1000)} s`,
            { service: service.service, enforced: service.policyVersion, expected },
          );
      } else {
        driftSince.delete(service.spiffeId);
      }
      if (service.svidExpiresAt - at < limits.svidExpiryMs)
        raise(
          'svid-expiring',
          service.spiffeId,
          `the SVID of ${service.service} expires at ${new Date(service.svidExpiresAt).toISOString()} and has not been renewed`,
          { service: service.service, expiresAt: service.svidExpiresAt },
        );
      const dryRoutes = service.routes
        .filter((route) => route.dryRun)
        .map((route) => `${route.method} ${route.template}`);
      if (service.mode === 'dry-run' || dryRoutes.length > 0)
        raise(
          'dry-run',
          service.spiffeId,
          service.mode === 'dry-run'
            ? `${service.service} runs in dry-run mode: denials are let through`
            : `${service.service} lets denials through on ${dryRoutes.join(', ')}`,
          { service: service.service, mode: service.mode, routes: dryRoutes },
        );
    }
    // Guards that stopped reporting and did not deregister: crashed, hung, or cut off from us.
    const listening = at - awakeSince >= limits.silentAfterMs;
    for (const service of registered) {
      const { spiffeId, lastSeen } = service;
      const who = `${service.service} (${spiffeId})`;
      const silentSince = silent.get(spiffeId);
      if (silentSince !== undefined) {
        if (lastSeen <= silentSince) continue;
        silent.delete(spiffeId);
        emit(
          'guard-resumed',
          spiffeId,
          `${who} reports again after ${Math.round((lastSeen - silentSince) / 1000)} s of silence`,
          { service: service.service, spiffeId, silentSince: iso(silentSince), back: iso(lastSeen) },
        );
      } else if (listening && at - lastSeen > limits.silentAfterMs) {
        silent.set(spiffeId, lastSeen);
        // Once per silence: also across a restart of the monitor, and among replicas sharing the store.
        const told = (await store.alerts(1_000, lastSeen)).some(
          (alert) => alert.rule === 'guard-silent' && alert.subject === spiffeId,
        );
        if (told) continue;
        emit(
          'guard-silent',
          spiffeId,
          `${who} has not reported since ${iso(lastSeen)} (${Math.round((at - lastSeen) / 1000)} s) ` +
            'and did not deregister: check that it is running (its process and log) and that it can reach the control plane',
          {
            service: service.service,
            spiffeId,
            lastSeen: iso(lastSeen),
            endpoints: service.endpoints,
            check: [
              'the service process runs (a supervisor restarts a crashed one)',
              'its log',
              'the network between it and the control plane',
            ],
          },
        );
      }
    }
    // A guard that deregistered (a clean stop) is no longer watched.
    for (const spiffeId of silent.keys()) {
      if (!registered.some((service) => service.spiffeId === spiffeId)) silent.delete(spiffeId);
    }
    // Outages of the control plane, once a service has said what it will about its own.
    for (const outage of [...outages.values()].flat()) {
      if (!outage.reported && at - outage.heardAt >= limits.outageSettleMs) reportOutage(outage);
    }
    // The senders' own reports: drops from a full spool.
    for (const stream of streams) {
      const key = `${stream.source} ${stream.stream}`;
      if (stream.dropped > (droppedSeen.get(key) ?? 0)) {
        raise(
          'spool-drops',
          stream.source,
          `${serviceOf(stream.source) ?? stream.source} dropped ${stream.dropped} decision events: its spool was full`,
          { source: stream.source, stream: stream.stream, dropped: stream.dropped },
        );
        droppedSeen.set(key, stream.dropped);
      }
      // A sender that died and never resumed its stream: what it had numbered but not delivered is lost.
      // (Only once the monitor has been up that long: while it was down, nobody could be heard.)
      if (
        stream.closedAt === null &&
        stream.written > 0 &&
        at - stream.lastSeen > AUDIT_STREAM_SILENCE_MS &&
        at - startedAt > AUDIT_STREAM_SILENCE_MS
      ) {
        const unaccounted = Math.max(0, stream.written - stream.lastStreamSeq) + stream.gaps;
        if (unaccounted > 0)
          raise(
            'audit-gap',
            `${stream.source} ${stream.stream}`,
            `${serviceOf(stream.source) ?? stream.source}: stream ${stream.stream} ended uncleanly, ${unaccounted} event${unaccounted === 1 ? '' : 's'} unaccounted (silent since ${new Date(stream.lastSeen).toISOString()})`,
            { source: stream.source, stream: stream.stream, written: stream.written, unaccounted },
          );
      }
    }
    // The whole trail, now and then.
    if (options.auditKeys !== undefined && at - lastVerify >= (options.verifyEveryMs ?? 10 * 60_000)) {
      lastVerify = at;
      const report = await verifyTrail(store, options.auditKeys());
      // Missing and unaccounted events have alerts of their own (above, and as batches arrive).
      for (const problem of report.problems.filter((entry) => entry.kind !== 'missing' && entry.kind !== 'unclean'))
        raise('audit-gap', problem.source, `the audit trail does not verify: ${problem.detail}`, { ...problem });
    }
    await Promise.all(pending);
  }

  const timer = setInterval(
    () => void sweep().catch((error: Error) => options.onError?.(error)),
    options.sweepMs ?? 5_000,
  );
  timer.unref();

  return {
    observeDecisions,
    observeLogin,
    observeUnreachable(report) {
      unreachableFrom(report.service, report.since, report.until, null);
    },
    observeRecoveryReuse(reuse) {
      raise(
        'svid-recovery-reuse',
        reuse.spiffeId,
        `SVID ${reuse.serial} of ${reuse.spiffeId} was presented for recovery after it was ${SPENT[reuse.via]} at ${iso(reuse.spentAt)}: ` +
          'two holders of one key. Revoke the workload unless a clone explains it',
        { ...reuse },
        [reuse.serial],
      );
    },
    observeTrailIncident(incident) {
      raise(
        'audit-gap',
        incident.source ?? 'checkpoint chain',
        `the audit trail was tampered with: ${incident.detail}`,
        { ...incident },
      );
    },
    sweep,
    onAlert(listener) {
      listeners.add(listener);
      return () => listeners.delete(listener);
    },
    stop: () => {
      clearInterval(timer);
      clearInterval(ticker);
    },
  };
}
