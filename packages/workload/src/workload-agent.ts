/**
 * Everything a guarded service needs from the control plane, in one call: join with a one-time
 * token (key generated here, bundle pinned by the token), then keep the guard in step — renew the
 * SVID at half its life (with jitter, so that a fleet does not renew at once) and hand it to
 * `guard.setSvid`, follow the policy/revocation stream, and report to the registry — and obtain
 * Txn-Tokens for outbound calls that start a transaction.
 *
 *   const agent = await joinAsWorkload({ url, trustDomain, joinToken, service });
 *   const guard = await createGuard(agent.guardOptions());   // decisions shipped to the monitor
 *   agent.attach(guard);
 *
 * A workload that serves nothing (a job, a worker) calls guarded services with the agent alone:
 *
 *   const txnToken = await agent.txnToken({ subjectTokenType: 'self_signed', scope: 'reports:run' });
 *   const response = await agent.request('https://reports:8443/run', { server: 'reports', method: 'POST', txnToken });
 *
 * Fail-static: when the control plane cannot be reached the guard keeps what it has, and `onEvent`
 * reports every failure. A failed renewal is retried at 5 s → 60 s (with jitter), never giving up. From
 * 30 s before the SVID expires, renewal failing, the agent recovers instead (`POST /v1/recover`, the
 * expired SVID presented in the handshake) at 2 s → 15 s, for as long as it takes: a workload cut off
 * for longer than its SVID lives gets a new one within about 15 s of a replica answering again
 * (`recovered`), without a join token. One renewal or recovery, retries included (the renewal that
 * failed and the recovery after it), asks for one new key: if an answer was lost (a failover abandoned
 * the attempt, or the outage began as it was answered), the control plane serves that key again. A
 * refusal no retry can change (revoked, the SVID spent, past the recovery window) ends it:
 * `recovery-refused`, `agent.state === 'needs-join'`, and only a new join token helps (a restarted
 * process joins again anyway: its key was in memory only). So does a control plane whose certificate
 * no longer verifies against this workload's bundle at any replica, three tries in a row: its CA
 * changed while the workload was away (`LOCKSTEP_ENROL_CA_CHANGED`).
 *
 * `url` may name several replicas of the control plane (a list, or comma-separated): every call —
 * join, renewal, policy keys, Txn-Tokens, the stream, the heartbeat — goes through one endpoint set,
 * which asks the replica that answered last first and moves to the next within a bounded time
 * (`failover.ts`). The guard gets the same URLs for its JWKS and its audit collector.
 */
import { join, resolve } from 'node:path';
import process from 'node:process';
import type { GuardStatus } from '@lockstep/guard';
import { workloadId, type ControlPlaneEndpoints } from '@lockstep/identity';
import type { JWK } from 'jose';
import { request, type Agent, type Dispatcher } from 'undici';
import { controlPlaneAgent } from './control-plane-agent.ts';
import {
  generateSvidKeys,
  joinControlPlane,
  recoverWithControlPlane,
  renewWithControlPlane,
  type WorkloadCredentials,
} from './enrol-client.ts';
import { EnrolmentError, type EnrolmentErrorCode } from './errors.ts';
import { connectTimeoutFor, endpointsOf, unexpectedAnswer, withFailover } from './failover.ts';
import { connectGuardStream, type GuardStream, type StreamEvent, type StreamTarget } from './guard-stream.ts';
import { startRegistryHeartbeat, type Heartbeat } from './registry-heartbeat.ts';
import { signSelfSignedSubjectToken } from './self-signed.ts';
import { requestTxnToken, type WorkloadTxnTokenRequest } from './txn-token.ts';
import { createWorkloadClient, type WorkloadRequestOptions } from './workload-client.ts';

export interface AttachableGuard extends StreamTarget {
  setSvid(svid: { cert: string; key: string }): void;
  status(): GuardStatus;
  /** When the guard's server starts listening: the registry learns its address at once. */
  onListening?(listener: () => void): () => void;
}

export type AgentEvent =
  | StreamEvent
  | { readonly kind: 'renewed'; readonly expiresAt: Date }
  | { readonly kind: 'renewal-failed'; readonly reason: string; readonly retryInMs: number }
  /** Renewal failing within 30 s of expiry or after it, so was recovery; tried again in `retryInMs`. */
  | { readonly kind: 'recovery-failed'; readonly reason: string; readonly retryInMs: number }
  /** A new SVID for one that expired (or was about to) while no control plane answered; in use as a renewed one is. */
  | { readonly kind: 'recovered'; readonly expiresAt: Date; readonly previousExpiresAt: Date }
  /**
   * The control plane refused recovery for good (`LOCKSTEP_CP_WORKLOAD_REVOKED`, `…_RECOVERY_REFUSED`,
   * `…_RECOVERY_EXPIRED`), or its CA changed while this workload was away (`LOCKSTEP_ENROL_CA_CHANGED`,
   * three tries in a row): `state` is `needs-join`, nothing more is tried. Join again with a new token.
   */
  | { readonly kind: 'recovery-refused'; readonly code: EnrolmentErrorCode; readonly message: string }
  | { readonly kind: 'heartbeat-failed'; readonly reason: string };

/**
 * `active`: the SVID is valid, renewed on time or retried. `recovering`: within 30 s of expiry or past
 * it, renewal failing, recovery is tried until it works. `needs-join`: recovery was refused for good;
 * this instance must join again with a new join token. `closed`: `close()` was called.
 */
export type WorkloadAgentState = 'active' | 'recovering' | 'needs-join' | 'closed';

export interface WorkloadAgentOptions {
  /**
   * The control plane: its URL, or its replicas' — a list, or comma-separated
   * (`https://cp-0:8443,https://cp-1:8443`). Only https.
   */
  readonly url: string | readonly string[];
  /**
   * Rotates the list of replicas by a hash of this key (e.g. the host name), so that a fleet given the
   * same list spreads over them. Default: none, the list's order.
   */
  readonly spreadKey?: string;
  readonly trustDomain: string;
  readonly joinToken: string;
  readonly service: string;
  readonly onEvent?: (event: AgentEvent) => void;
  /**
   * The first wait before retrying a failed renewal: it doubles with each failure in a row, up to 60 s,
   * less up to a quarter of jitter, and never waits past the point where recovery takes over. Default 5 s.
   */
  readonly retryMs?: number;
  /**
   * When to renew, as the share of the SVID's life that has passed: default 0.5 (half-life), from 0.1 to
   * 0.9, less up to a tenth of the life of jitter (so that a fleet does not renew at once). Earlier leaves
   * more time to retry through a control-plane outage before the SVID expires.
   */
  readonly renewAt?: number;
  readonly heartbeatMs?: number;
  /** How the guard follows the control plane: `stream` (default, SSE with polling while it is down) or `poll`. */
  readonly transport?: 'stream' | 'poll';
  readonly pollMs?: number;
  /**
   * Where this workload keeps what must outlive a restart: the spool of decisions on their way to the
   * monitor (`<stateDir>/audit-spool`). One directory per running instance. Default
   * `<LOCKSTEP_HOME, else ./.lockstep>/workloads/<service>`.
   */
  readonly stateDir?: string;
}

/** The default state directory of a workload: beside the CLI's (LOCKSTEP_HOME, default ./.lockstep), one per service. */
export function defaultWorkloadStateDir(service: string, env: NodeJS.ProcessEnv = process.env): string {
  const home = env.LOCKSTEP_HOME === undefined || env.LOCKSTEP_HOME === '' ? '.lockstep' : env.LOCKSTEP_HOME;
  return resolve(home, 'workloads', service);
}

export interface WorkloadAgent {
  /** The SVID in use now. */
  readonly credentials: WorkloadCredentials;
  /** Where the agent stands (see `WorkloadAgentState`): `needs-join` is for the runtime to act on. */
  readonly state: WorkloadAgentState;
  /**
   * What `createGuard` needs from the control plane: service, trust domain, trust bundle, SVID, the
   * Txn-Token Service's JWKS URL (fetched, refreshed, refetched on an unknown `kid`: key rotations
   * are followed), the policy keys, and shipping of every decision to the monitor's collector, spooled
   * in `auditSpoolDir` (default `<stateDir>/audit-spool`) so that none is lost while the control plane
   * is away or the service restarts. `auditSpoolDir: false` ships nothing: the monitor then never sees
   * this service's decisions (for tests only).
   */
  guardOptions(options?: { auditSpoolDir?: string | false }): {
    service: string;
    trustDomain: string;
    trustBundle: string;
    svid: { cert: string; key: string };
    /** `{ url }` for one control plane URL, `{ urls }` (every replica) for several. */
    txnTokenKeys: { url: string } | { urls: string[] };
    policy: { keys: { keys: JWK[] } };
    audit?: { collector: ({ url: string } | { urls: string[] }) & { spoolDir: string } };
  };
  /** Starts the stream and the heartbeat for this guard, and hands it every renewed SVID. */
  attach(guard: AttachableGuard): void;
  /**
   * Renews now (normally the timer does: at half the SVID's life, from the join on, attached or not). A
   * failure is retried by the timer, as any failed renewal is.
   */
  renew(): Promise<void>;
  /**
   * mTLS to the control plane with the current SVID and trust bundle, for calls of your own (an
   * OpenID client's `tls_client_auth`): a new pool after every renewal or bundle change, the old one
   * closed once its requests end. Take it for each call rather than keeping it.
   */
  controlPlane(): Dispatcher;
  /**
   * A Txn-Token from the control plane's Txn-Token Service (RFC 8693), for a call that starts a
   * transaction or narrows the inbound one; rejects with a `TxnTokenError`. With `subjectTokenType:
   * 'self_signed'` and no `subjectToken`, the agent signs the subject token itself with its SVID's key
   * (work this workload starts on its own: the Txn-Token's `sub` is its SPIFFE ID). Calls made inside
   * a guarded handler need none: `guard.client` forwards the inbound Txn-Token.
   */
  txnToken(request: WorkloadTxnTokenRequest): Promise<string>;
  /**
   * A call to another guarded service over mTLS with the current SVID, the server checked against
   * `spiffe://<trust domain>/svc/<options.server>`, `options.txnToken` in the `Txn-Token` header: for
   * a workload that serves nothing itself. Handlers of a guarded service use `guard.client`.
   */
  request(url: string | URL, options: WorkloadRequestOptions): Promise<Dispatcher.ResponseData>;
  /** Stops following, and leaves the registry (a clean stop: no "guard silent" alert follows). */
  close(): Promise<void>;
}

/** A failed renewal is tried again after 5 s, doubling to 60 s: never given up. */
const RENEWAL_RETRY_MS = 5_000;
const RENEWAL_RETRY_MAX_MS = 60_000;
/** From this long before the SVID expires, renewal failing, the agent recovers instead. */
const RECOVER_BEFORE_EXPIRY_MS = 30_000;
/** Recovery is tried after 2 s, doubling to 15 s: back within about 15 s of a replica answering again. */
const RECOVERY_RETRY_MS = 2_000;
const RECOVERY_RETRY_MAX_MS = 15_000;
/** Refusals of recovery that no retry can change: this instance must join again with a new token. */
const FINAL_REFUSALS: ReadonlySet<string> = new Set([
  'LOCKSTEP_CP_WORKLOAD_REVOKED',
  'LOCKSTEP_CP_RECOVERY_REFUSED',
  'LOCKSTEP_CP_RECOVERY_EXPIRED',
]);
/**
 * Recovery tries in a row at which no replica's certificate verified against the bundle, after which the
 * CA is taken to have changed: one is not enough (a replica may be misconfigured, or restarting with
 * another CA's certificate), and a root rotation this workload missed does not undo itself.
 */
const CA_CHANGED_AFTER = 3;

export async function joinAsWorkload(options: WorkloadAgentOptions): Promise<WorkloadAgent> {
  workloadId(options.trustDomain, options.service); // a TypeError naming the rule, before the service's name becomes a directory
  const renewAt = options.renewAt ?? 0.5;
  if (typeof renewAt !== 'number' || !(renewAt >= 0.1 && renewAt <= 0.9))
    throw new TypeError(
      `renewAt is the share of the SVID's life after which it renews, from 0.1 to 0.9 (default 0.5); got ${String(renewAt)}`,
    );
  const stateDir =
    options.stateDir === undefined ? defaultWorkloadStateDir(options.service) : resolve(options.stateDir);
  // One endpoint set for every call: what one call learns of a replica, the next one knows.
  const endpoints = endpointsOf(options.url, options.spreadKey);
  let credentials = await joinControlPlane({
    url: endpoints,
    trustDomain: options.trustDomain,
    joinToken: options.joinToken,
    service: options.service,
  });
  const policyKeys = await fetchPolicyKeys(endpoints, options.trustDomain, credentials.bundlePem);
  const notify = options.onEvent ?? (() => {});
  let guard: AttachableGuard | null = null;
  let stream: GuardStream | null = null;
  let heartbeat: Heartbeat | null = null;
  let timer: NodeJS.Timeout | null = null;
  let closed = false;
  let state: WorkloadAgentState = 'active';
  let renewalFailures = 0;
  let recoveryFailures = 0;
  /** Recovery tries in a row that failed with LOCKSTEP_ENROL_CA_CHANGED. */
  let caChanged = 0;
  /**
   * The key of the SVID being asked for, kept from the first try of a renewal to the SVID it brings
   * (renewed or recovered): every retry asks for the same key, so that one whose first answer was lost
   * is served again rather than refused as a reuse. In memory only, as the SVID's own key.
   */
  let nextKeys: Awaited<ReturnType<typeof generateSvidKeys>> | null = null;
  let busy: Promise<void> = Promise.resolve();
  // The stream and heartbeat stopped on needs-join, for close() to wait for.
  let retired: Promise<unknown> = Promise.resolve();

  const tls = () => ({ cert: credentials.chainPem, key: credentials.keyPem, ca: credentials.bundlePem });
  let pool: { readonly chainPem: string; readonly bundlePem: string; readonly agent: Agent } | null = null;

  function controlPlane(): Dispatcher {
    if (closed) throw new TypeError('this workload agent is closed: join again for a new one');
    if (pool?.chainPem !== credentials.chainPem || pool.bundlePem !== credentials.bundlePem) {
      void pool?.agent.close();
      pool = {
        chainPem: credentials.chainPem,
        bundlePem: credentials.bundlePem,
        agent: controlPlaneAgent(options.trustDomain, tls(), undefined, connectTimeoutFor(endpoints)),
      };
    }
    return pool.agent;
  }

  function follow(): void {
    if (guard === null || closed || state === 'needs-join') return;
    const previous = { stream, heartbeat };
    // The stream and the heartbeat present the SVID: after a renewal they reconnect with the new one.
    stream = connectGuardStream({
      url: endpoints,
      trustDomain: options.trustDomain,
      tls: tls(),
      target: guard,
      ...(options.transport === undefined ? {} : { transport: options.transport }),
      ...(options.pollMs === undefined ? {} : { pollMs: options.pollMs }),
      onEvent: (event) => {
        // A new trust bundle (root rotation) is used for the next connections to the control plane too.
        if (event.kind === 'trust-bundle') credentials = { ...credentials, bundlePem: event.bundle };
        notify(event);
        // The registry learns a new policy version at once, so that drift shows without waiting a heartbeat.
        if (event.kind === 'policy')
          void heartbeat
            ?.beat()
            .catch((error: unknown) => notify({ kind: 'heartbeat-failed', reason: (error as Error).message }));
      },
    });
    // An outage the previous heartbeat saw and could not report yet is the new one's to report.
    const unreported = previous.heartbeat?.unreachableSince ?? null;
    heartbeat = startRegistryHeartbeat({
      url: endpoints,
      trustDomain: options.trustDomain,
      tls: tls(),
      guard,
      intervalMs: options.heartbeatMs ?? 10_000,
      onError: (error) => notify({ kind: 'heartbeat-failed', reason: error.message }),
      ...(unreported === null ? {} : { unreachableSince: unreported }),
    });
    void previous.stream?.close();
    void previous.heartbeat?.stop();
  }

  const client = createWorkloadClient(options.trustDomain, tls);

  /** `path` on the control plane, for the guard: one URL as before, or every replica's, the one answering now first. */
  function onEveryReplica(path: string): { url: string } | { urls: string[] } {
    const urls = endpoints.order().map((base) => new URL(path, base).href);
    return urls.length === 1 ? { url: urls[0] as string } : { urls };
  }

  /** The subject token as asked, or — self_signed without one — signed here with the SVID's key. */
  async function subjectOf(wanted: WorkloadTxnTokenRequest): Promise<string> {
    if (wanted.subjectToken !== undefined || wanted.subjectTokenType !== 'self_signed')
      return wanted.subjectToken as string;
    return signSelfSignedSubjectToken({
      trustDomain: options.trustDomain,
      spiffeId: credentials.spiffeId,
      keyPem: credentials.keyPem,
      scope: wanted.scope,
    });
  }

  function schedule(delayMs?: number): void {
    if (closed || state === 'needs-join') return;
    if (timer !== null) clearTimeout(timer);
    const lifetime = credentials.expiresAt.getTime() - Date.now();
    // At `renewAt` of the life (half-life by default), minus up to a tenth of the lifetime of jitter.
    const wait = delayMs ?? Math.max(1_000, lifetime * renewAt - (Math.random() * lifetime) / 10);
    timer = setTimeout(() => void serially(step).catch(() => {}), wait);
    timer.unref();
  }

  /** One renewal or recovery at a time: a renewal asked for by hand waits for the timer's, and the reverse. */
  function serially(run: () => Promise<void>): Promise<void> {
    const result = busy.then(run);
    busy = result.catch(() => {});
    return result;
  }

  /** From here on, renewal failing, the agent recovers: 30 s before the SVID expires. */
  const recoveryPoint = () => credentials.expiresAt.getTime() - RECOVER_BEFORE_EXPIRY_MS;

  /** The timer's work: a renewal, or from the recovery point on a recovery. */
  async function step(): Promise<void> {
    if (closed || state === 'needs-join') return;
    return Date.now() < recoveryPoint() ? renewNow() : recoverNow();
  }

  /** The current SVID, presented in the handshake, for a new one (the pending key's): by renewal or by recovery. */
  async function exchange(how: typeof renewWithControlPlane): Promise<WorkloadCredentials> {
    const current = { chainPem: credentials.chainPem, keyPem: credentials.keyPem };
    nextKeys ??= await generateSvidKeys();
    const keys = nextKeys;
    return how({ url: endpoints, trustDomain: options.trustDomain, current, bundlePem: credentials.bundlePem, keys });
  }

  async function renewNow(): Promise<void> {
    if (timer !== null) clearTimeout(timer);
    let renewed: WorkloadCredentials;
    try {
      renewed = await exchange(renewWithControlPlane);
    } catch (error) {
      if (closed || state === 'needs-join') throw error;
      const retryInMs = retryAfterFailure();
      notify({ kind: 'renewal-failed', reason: (error as Error).message, retryInMs });
      schedule(retryInMs);
      throw error;
    }
    adopt(renewed, { kind: 'renewed', expiresAt: renewed.expiresAt });
  }

  /**
   * While the SVID is still valid by this clock, a renewal first: it works after a renewal whose answer
   * was lost (a recovery would find the SVID spent), and with a clock ahead of the control plane's (which
   * would refuse a recovery as too early). Recovery follows when the renewal is refused (a clock behind:
   * the control plane takes the SVID as expired) or once the SVID has expired.
   */
  async function recoverNow(): Promise<void> {
    if (timer !== null) clearTimeout(timer);
    const previousExpiresAt = credentials.expiresAt;
    try {
      if (Date.now() < previousExpiresAt.getTime()) {
        try {
          const renewed = await exchange(renewWithControlPlane);
          adopt(renewed, { kind: 'renewed', expiresAt: renewed.expiresAt });
          return;
        } catch (error) {
          if (!answered(error)) throw error; // no control plane answers: none would recover it either
        }
      }
      const recovered = await exchange(recoverWithControlPlane);
      adopt(recovered, { kind: 'recovered', expiresAt: recovered.expiresAt, previousExpiresAt });
    } catch (error) {
      if (closed) throw error;
      caChanged = error instanceof EnrolmentError && error.code === 'LOCKSTEP_ENROL_CA_CHANGED' ? caChanged + 1 : 0;
      if (error instanceof EnrolmentError && (FINAL_REFUSALS.has(error.code) || caChanged >= CA_CHANGED_AFTER)) {
        needsJoin(error);
        throw error;
      }
      const retryInMs = retryAfterFailure();
      notify({ kind: 'recovery-failed', reason: (error as Error).message, retryInMs });
      schedule(retryInMs);
      throw error;
    }
  }

  /**
   * The wait before the next try: before the recovery point, the renewal backoff (never past that
   * point); from there on, the recovery backoff. Both double with each failure in a row.
   */
  function retryAfterFailure(): number {
    const untilRecovery = recoveryPoint() - Date.now();
    if (untilRecovery > 0) {
      renewalFailures += 1;
      return Math.min(
        untilRecovery,
        backoff(options.retryMs ?? RENEWAL_RETRY_MS, RENEWAL_RETRY_MAX_MS, renewalFailures),
      );
    }
    state = 'recovering';
    recoveryFailures += 1;
    return backoff(RECOVERY_RETRY_MS, RECOVERY_RETRY_MAX_MS, recoveryFailures);
  }

  /** A new SVID, renewed or recovered: the guard presents it, the stream and the heartbeat reconnect with it. */
  function adopt(next: WorkloadCredentials, event: AgentEvent): void {
    const bundleBefore = credentials.bundlePem;
    credentials = next;
    state = closed ? 'closed' : 'active';
    renewalFailures = 0;
    recoveryFailures = 0;
    caChanged = 0;
    nextKeys = null;
    guard?.setSvid({ cert: credentials.chainPem, key: credentials.keyPem });
    if (guard !== null && credentials.bundlePem !== bundleBefore) guard.setTrustBundle(credentials.bundlePem);
    notify(event);
    follow();
    schedule();
  }

  /** Recovery refused for good: nothing more is tried, the stream and the heartbeat would be refused for ever. */
  function needsJoin(refusal: EnrolmentError): void {
    state = 'needs-join';
    nextKeys = null;
    if (timer !== null) clearTimeout(timer);
    const [following, beating] = [stream, heartbeat];
    stream = null;
    heartbeat = null;
    retired = Promise.all([following?.close(), beating?.stop()]).catch(() => {});
    notify({ kind: 'recovery-refused', code: refusal.code, message: refusal.message });
  }

  // Renewal runs from the join on, so that a workload that only calls others (no guard) keeps a valid SVID.
  schedule();

  return {
    get credentials() {
      return credentials;
    },
    get state() {
      return state;
    },
    guardOptions: (extra = {}) => ({
      service: options.service,
      trustDomain: options.trustDomain,
      trustBundle: credentials.bundlePem,
      svid: { cert: credentials.chainPem, key: credentials.keyPem },
      txnTokenKeys: onEveryReplica('/v1/txn-token/jwks.json'),
      policy: { keys: { keys: [...policyKeys] } },
      // Every decision is shipped to the control plane's collector, unless the caller says otherwise.
      ...(extra.auditSpoolDir === false
        ? {}
        : {
            audit: {
              collector: {
                ...onEveryReplica('/v1/audit/events'),
                spoolDir: extra.auditSpoolDir ?? join(stateDir, 'audit-spool'),
              },
            },
          }),
    }),
    attach(target) {
      if (guard !== null) throw new TypeError('this workload agent is already attached to a guard');
      guard = target;
      target.onListening?.(
        () =>
          void heartbeat
            ?.beat()
            .catch((error: unknown) => notify({ kind: 'heartbeat-failed', reason: (error as Error).message })),
      );
      follow();
    },
    renew: () => serially(renewNow),
    controlPlane,
    txnToken: async (wanted) =>
      requestTxnToken(
        { url: endpoints, trustDomain: options.trustDomain, dispatcher: controlPlane() },
        { ...wanted, subjectToken: await subjectOf(wanted) },
      ),
    request: (url, init) => client.request(url, init),
    async close() {
      closed = true;
      state = 'closed';
      if (timer !== null) clearTimeout(timer);
      // A clean stop leaves the registry: the monitor raises no alert for the silence that follows.
      const leaving = heartbeat
        ?.deregister()
        .catch((error: unknown) =>
          notify({ kind: 'heartbeat-failed', reason: `could not deregister: ${(error as Error).message}` }),
        );
      await Promise.all([stream?.close(), leaving, retired, pool?.agent.close(), client.close()]);
    },
  };
}

/** The policy-bundle signing keys, over TLS verified against the pinned bundle; none when the control plane serves no policy. */
async function fetchPolicyKeys(
  endpoints: ControlPlaneEndpoints,
  trustDomain: string,
  bundlePem: string,
): Promise<JWK[]> {
  const agent = controlPlaneAgent(trustDomain, { ca: bundlePem }, undefined, connectTimeoutFor(endpoints));
  const fetchFrom = async (base: string, signal: AbortSignal): Promise<JWK[]> => {
    const response = await request(new URL('/v1/policy/jwks.json', base), {
      dispatcher: agent,
      signal,
      headersTimeout: 10_000,
      bodyTimeout: 10_000,
    });
    if (response.statusCode === 404) {
      await response.body.dump();
      return [];
    }
    const body = (await response.body.json()) as { keys?: unknown };
    if (response.statusCode !== 200 || !Array.isArray(body.keys))
      throw unexpectedAnswer(`GET /v1/policy/jwks.json answered ${response.statusCode}`, response.statusCode);
    return body.keys as JWK[];
  };
  try {
    return await withFailover(endpoints, fetchFrom, { idempotent: true });
  } finally {
    await agent.close();
  }
}

/** `firstMs` doubled for each failure in a row after the first, at most `maxMs`, less up to a quarter (jitter). */
function backoff(firstMs: number, maxMs: number, failures: number): number {
  const wait = Math.min(Math.max(maxMs, firstMs), firstMs * 2 ** Math.min(failures - 1, 30));
  return Math.round(wait * (1 - Math.random() / 4));
}

/** The control plane answered with a refusal (a 4xx), rather than not answering. */
function answered(error: unknown): boolean {
  return error instanceof EnrolmentError && error.status !== null && error.status >= 400 && error.status < 500;
}
