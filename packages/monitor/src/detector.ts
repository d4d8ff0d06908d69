/**
 * The detector: the rules of rules.ts applied to what the monitor sees — every guard's decisions (as
 * the collector stores them), every sign-in at the identity provider, the registry and the trail —
 * raising alerts that are stored, handed to listeners (the webhook, the dashboard) and deduplicated
 * per rule and subject.
 */
import { randomUUID } from 'node:crypto';
import type { JSONWebKeySet } from 'jose';
import { parseSpiffeId } from '@lockstep/guard';
import { AUDIT_STREAM_SILENCE_MS, type AlertRecord, type AuditAppend, type ControlPlaneStore, type LoginEvent } from '@lockstep/control-plane';
import { DEFAULT_THRESHOLDS, RULES, type RuleId, type Thresholds } from './rules.ts';
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
  /** Tampering the checkpointer found (wire to its `onIncident`). */
  observeTrailIncident(incident: Incident): void;
  /** Registry, streams, transactions, trail: the timer calls it; tests may too. */
  sweep(): Promise<void>;
  onAlert(listener: (alert: AlertRecord) => void): () => void;
  stop(): void;
}

const serviceOf = (spiffeId: unknown) => (typeof spiffeId === 'string' ? parseSpiffeId(spiffeId)?.service ?? null : null);
const REVOKED = new Set(['LOCKSTEP_ERR_TXN_TOKEN_REVOKED', 'LOCKSTEP_ERR_PEER_REVOKED']);
const UNTRUSTED = new Set(['LOCKSTEP_ERR_PEER_CERT_MISSING', 'LOCKSTEP_ERR_PEER_UNTRUSTED', 'LOCKSTEP_ERR_PEER_FOREIGN_TRUST_DOMAIN', 'LOCKSTEP_ERR_PEER_ID_INVALID']);
const TXN_MEMORY = 10_000;

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
  const txns = new Map<string, { service: string; caller: string | null; time: string; requestId: string }[]>();
  /** Transactions with new events since the last sweep: only they are looked at again. */
  const touched = new Set<string>();
  const driftSince = new Map<string, number>();
  const droppedSeen = new Map<string, number>();
  let lastVerify = 0;
  const pending: Promise<unknown>[] = [];

  function raise(rule: RuleId, subject: string, summary: string, details: Record<string, unknown>): void {
    const key = `${rule} ${subject}`;
    const at = now();
    const last = lastRaised.get(key);
    if (last !== undefined && at - last < limits.cooldownMs) return;
    lastRaised.set(key, at);
    const alert: AlertRecord = { id: randomUUID(), rule, severity: severity.get(rule) ?? 'medium', subject, summary, details: JSON.stringify(details), at };
    const stored = store.addAlert(alert).then(() => { for (const listener of listeners) listener(alert); }, (error: Error) => options.onError?.(error));
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

  function observeDecisions(batch: { source: string; service: string; result: AuditAppend; events: readonly Event[] }): void {
    if (batch.result.gaps.length > 0) {
      const missing = batch.result.gaps.reduce((sum, [from, to]) => sum + to - from + 1, 0);
      raise('audit-gap', batch.source, `${missing} decision event${missing === 1 ? '' : 's'} of ${batch.service} never arrived`, { source: batch.source, gaps: batch.result.gaps });
    }
    for (const event of batch.events) {
      // A scanner's probes are attacks on purpose: the Scans page reports them. The guard marks them
      // (`probeAs`, present only when its transport step verified a …/scanner/… caller). The scanner's
      // unauthenticated attempts (no or an untrusted certificate) cannot be told from anyone else's
      // and are counted like them.
      if ('probeAs' in event) continue;
      const callerService = serviceOf(event.caller);
      const reason = String(event.reason);
      const denied = event.decision === 'deny';
      if (typeof event.txn === 'string') {
        let seen = txns.get(event.txn);
        if (seen === undefined) {
          if (txns.size >= TXN_MEMORY) txns.delete(txns.keys().next().value as string);
          txns.set(event.txn, seen = []);
        }
        seen.push({ service: String(event.service), caller: callerService, time: String(event.time), requestId: String(event.requestId) });
        touched.add(event.txn);
      }
      if (callerService !== null) {
        const edge = `${callerService}→${String(event.service)}`;
        if (!denied) allowedEdges.add(edge);
        else if (reason === 'LOCKSTEP_ERR_DENIED' && !allowedEdges.has(edge)) {
          raise('lateral-movement', edge, `${callerService} called ${String(event.service)} (${String(event.action)}), which the policy does not allow and which never happened before`, { edge, action: event.action, requestId: event.requestId, sub: event.sub, txn: event.txn });
        }
      }
      if (denied) {
        const caller = String(event.caller ?? 'unidentified');
        const denials = count(`denials ${caller}`, limits.denialWindowMs);
        if (denials >= limits.denialBurst) raise('denial-burst', caller, `${denials} requests from ${caller} refused within ${limits.denialWindowMs / 1000} s`, { caller, denials, lastRequestId: event.requestId, lastReason: reason });
      }
      if (REVOKED.has(reason)) {
        raise('use-after-revocation', String(event.sub ?? event.caller ?? event.txn ?? 'unknown'), `a revoked ${reason === 'LOCKSTEP_ERR_PEER_REVOKED' ? 'workload' : 'user, transaction or key'} was used at ${String(event.service)}`, { service: event.service, caller: event.caller, sub: event.sub, txn: event.txn, requestId: event.requestId });
      }
      if (reason === 'LOCKSTEP_ERR_TXN_TOKEN_EXPIRED') {
        raise('txn-replay', String(event.txn ?? event.requestId), `an expired Txn-Token was presented at ${String(event.service)} by ${String(event.caller)}`, { service: event.service, caller: event.caller, requestId: event.requestId });
      }
      if (UNTRUSTED.has(reason)) {
        const attempts = count(`untrusted ${String(event.service)}`, limits.denialWindowMs);
        if (attempts >= limits.untrustedCertificates) raise('untrusted-certificate', String(event.service), `${attempts} requests to ${String(event.service)} without a trusted client certificate within ${limits.denialWindowMs / 1000} s`, { service: event.service, lastReason: reason, lastRequestId: event.requestId });
      }
    }
  }

  function observeLogin(event: LoginEvent): void {
    if (event.outcome !== 'failure') return;
    const failures = count(`login ${event.username}`, limits.loginWindowMs);
    if (failures >= limits.bruteForceFailures) raise('brute-force', event.username, `${failures} failed sign-ins for ${event.username} within ${limits.loginWindowMs / 60_000} min`, { account: event.username, failures, lastIp: event.ip });
    const accounts = loginAccounts.get(event.ip) ?? new Map<string, number>();
    const at = now();
    accounts.set(event.username, at);
    for (const [account, time] of accounts) if (at - time >= limits.loginWindowMs) accounts.delete(account);
    loginAccounts.set(event.ip, accounts);
    if (accounts.size >= limits.sprayingAccounts) raise('password-spraying', event.ip, `failed sign-ins for ${accounts.size} different accounts from ${event.ip} within ${limits.loginWindowMs / 60_000} min`, { ip: event.ip, accounts: [...accounts.keys()].slice(0, 50) });
  }

  async function sweep(): Promise<void> {
    const at = now();
    // A transaction's token may come only from the workloads its chain reached (or its originator).
    const changed = [...touched];
    touched.clear();
    for (const txn of changed) {
      const seen = txns.get(txn);
      if (seen === undefined) continue;
      const ordered = [...seen].sort((a, b) => a.time.localeCompare(b.time));
      const reached = new Set(ordered.map((hop) => hop.service));
      const originator = ordered.find((hop) => hop.caller !== null)?.caller;
      for (const hop of ordered) {
        if (hop.caller !== null && hop.caller !== originator && !reached.has(hop.caller)) {
          raise('txn-replay', txn, `${hop.caller} presented the Txn-Token of transaction ${txn} at ${hop.service}, but the transaction never reached ${hop.caller}`, { txn, caller: hop.caller, service: hop.service, requestId: hop.requestId, chain: ordered.map((entry) => `${entry.caller ?? 'edge'}→${entry.service}`) });
        }
      }
    }
    // The registry: drift, SVIDs about to expire, dry-run.
    for (const service of await store.services()) {
      const expected = await options.expectedPolicyVersion?.(service.service) ?? null;
      if (expected !== null && service.policyVersion !== expected) {
        const since = driftSince.get(service.spiffeId) ?? at;
        driftSince.set(service.spiffeId, since);
        if (at - since > limits.driftAfterMs) raise('policy-drift', service.spiffeId, `${service.service} enforces ${service.policyVersion?.slice(0, 12) ?? 'no policy'}, not ${expected.slice(0, 12)}, for ${Math.round((at - since) / 1000)} s`, { service: service.service, enforced: service.policyVersion, expected });
      } else {
        driftSince.delete(service.spiffeId);
      }
      if (service.svidExpiresAt - at < limits.svidExpiryMs) raise('svid-expiring', service.spiffeId, `the SVID of ${service.service} expires at ${new Date(service.svidExpiresAt).toISOString()} and has not been renewed`, { service: service.service, expiresAt: service.svidExpiresAt });
      const dryRoutes = service.routes.filter((route) => route.dryRun).map((route) => `${route.method} ${route.template}`);
      if (service.mode === 'dry-run' || dryRoutes.length > 0) raise('dry-run', service.spiffeId, service.mode === 'dry-run' ? `${service.service} runs in dry-run mode: denials are let through` : `${service.service} lets denials through on ${dryRoutes.join(', ')}`, { service: service.service, mode: service.mode, routes: dryRoutes });
    }
    // The senders' own reports: drops from a full spool.
    for (const stream of await store.auditStreams()) {
      const key = `${stream.source} ${stream.stream}`;
      if (stream.dropped > (droppedSeen.get(key) ?? 0)) {
        raise('spool-drops', stream.source, `${serviceOf(stream.source) ?? stream.source} dropped ${stream.dropped} decision events: its spool was full`, { source: stream.source, stream: stream.stream, dropped: stream.dropped });
        droppedSeen.set(key, stream.dropped);
      }
      // A sender that died and never resumed its stream: what it had numbered but not delivered is lost.
      // (Only once the monitor has been up that long: while it was down, nobody could be heard.)
      if (stream.closedAt === null && stream.written > 0 && at - stream.lastSeen > AUDIT_STREAM_SILENCE_MS && at - startedAt > AUDIT_STREAM_SILENCE_MS) {
        const unaccounted = Math.max(0, stream.written - stream.lastStreamSeq) + stream.gaps;
        if (unaccounted > 0) raise('audit-gap', `${stream.source} ${stream.stream}`, `${serviceOf(stream.source) ?? stream.source}: stream ${stream.stream} ended uncleanly, ${unaccounted} event${unaccounted === 1 ? '' : 's'} unaccounted (silent since ${new Date(stream.lastSeen).toISOString()})`, { source: stream.source, stream: stream.stream, written: stream.written, unaccounted });
      }
    }
    // The whole trail, now and then.
    if (options.auditKeys !== undefined && at - lastVerify >= (options.verifyEveryMs ?? 10 * 60_000)) {
      lastVerify = at;
      const report = await verifyTrail(store, options.auditKeys());
      // Missing and unaccounted events have alerts of their own (above, and as batches arrive).
      for (const problem of report.problems.filter((entry) => entry.kind !== 'missing' && entry.kind !== 'unclean')) raise('audit-gap', problem.source, `the audit trail does not verify: ${problem.detail}`, { ...problem });
    }
    await Promise.all(pending);
  }

  const timer = setInterval(() => void sweep().catch((error: Error) => options.onError?.(error)), options.sweepMs ?? 5_000);
  timer.unref();

  return {
    observeDecisions,
    observeLogin,
    observeTrailIncident(incident) {
      raise('audit-gap', incident.source ?? 'checkpoint chain', `the audit trail was tampered with: ${incident.detail}`, { ...incident });
    },
    sweep,
    onAlert(listener) {
      listeners.add(listener);
      return () => listeners.delete(listener);
    },
    stop: () => clearInterval(timer),
  };
}
