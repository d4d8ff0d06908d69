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
 * Fail-static: when the control plane cannot be reached the guard keeps what it has; renewal is
 * retried every `retryMs` until the SVID expires, and `onEvent` reports every failure.
 */
import { join, resolve } from 'node:path';
import process from 'node:process';
import type { GuardStatus } from '@lockstep/guard';
import { workloadId } from '@lockstep/identity';
import type { JWK } from 'jose';
import { request, type Agent, type Dispatcher } from 'undici';
import { controlPlaneAgent } from './control-plane-agent.ts';
import { joinControlPlane, renewWithControlPlane, type WorkloadCredentials } from './enrol-client.ts';
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
  | { readonly kind: 'heartbeat-failed'; readonly reason: string };

export interface WorkloadAgentOptions {
  readonly url: string;
  readonly trustDomain: string;
  readonly joinToken: string;
  readonly service: string;
  readonly onEvent?: (event: AgentEvent) => void;
  /** Wait before retrying a failed renewal. Default 5 s. */
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
    txnTokenKeys: { url: string };
    policy: { keys: { keys: JWK[] } };
    audit?: { collector: { url: string; spoolDir: string } };
  };
  /** Starts the stream and the heartbeat for this guard, and hands it every renewed SVID. */
  attach(guard: AttachableGuard): void;
  /** Renews now (normally the timer does: at half the SVID's life, from the join on, attached or not). */
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

export async function joinAsWorkload(options: WorkloadAgentOptions): Promise<WorkloadAgent> {
  workloadId(options.trustDomain, options.service); // a TypeError naming the rule, before the service's name becomes a directory
  const renewAt = options.renewAt ?? 0.5;
  if (typeof renewAt !== 'number' || !(renewAt >= 0.1 && renewAt <= 0.9))
    throw new TypeError(
      `renewAt is the share of the SVID's life after which it renews, from 0.1 to 0.9 (default 0.5); got ${String(renewAt)}`,
    );
  const stateDir =
    options.stateDir === undefined ? defaultWorkloadStateDir(options.service) : resolve(options.stateDir);
  let credentials = await joinControlPlane({
    url: options.url,
    trustDomain: options.trustDomain,
    joinToken: options.joinToken,
    service: options.service,
  });
  const policyKeys = await fetchPolicyKeys(options.url, options.trustDomain, credentials.bundlePem);
  const notify = options.onEvent ?? (() => {});
  let guard: AttachableGuard | null = null;
  let stream: GuardStream | null = null;
  let heartbeat: Heartbeat | null = null;
  let timer: NodeJS.Timeout | null = null;
  let closed = false;

  const tls = () => ({ cert: credentials.chainPem, key: credentials.keyPem, ca: credentials.bundlePem });
  let pool: { readonly chainPem: string; readonly bundlePem: string; readonly agent: Agent } | null = null;

  function controlPlane(): Dispatcher {
    if (closed) throw new TypeError('this workload agent is closed: join again for a new one');
    if (pool?.chainPem !== credentials.chainPem || pool.bundlePem !== credentials.bundlePem) {
      void pool?.agent.close();
      pool = {
        chainPem: credentials.chainPem,
        bundlePem: credentials.bundlePem,
        agent: controlPlaneAgent(options.trustDomain, tls()),
      };
    }
    return pool.agent;
  }

  function follow(): void {
    if (guard === null || closed) return;
    const previous = { stream, heartbeat };
    // The stream and the heartbeat present the SVID: after a renewal they reconnect with the new one.
    stream = connectGuardStream({
      url: options.url,
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
      url: options.url,
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
    if (closed) return;
    if (timer !== null) clearTimeout(timer);
    const lifetime = credentials.expiresAt.getTime() - Date.now();
    // At `renewAt` of the life (half-life by default), minus up to a tenth of the lifetime of jitter.
    const wait = delayMs ?? Math.max(1_000, lifetime * renewAt - (Math.random() * lifetime) / 10);
    timer = setTimeout(() => void renew().catch(() => {}), wait);
    timer.unref();
  }

  async function renew(): Promise<void> {
    if (timer !== null) clearTimeout(timer);
    const bundleBefore = credentials.bundlePem;
    try {
      credentials = await renewWithControlPlane({
        url: options.url,
        trustDomain: options.trustDomain,
        current: { chainPem: credentials.chainPem, keyPem: credentials.keyPem },
        bundlePem: credentials.bundlePem,
      });
    } catch (error) {
      const retryInMs = options.retryMs ?? 5_000;
      notify({ kind: 'renewal-failed', reason: (error as Error).message, retryInMs });
      if (credentials.expiresAt.getTime() > Date.now()) schedule(retryInMs);
      throw error;
    }
    guard?.setSvid({ cert: credentials.chainPem, key: credentials.keyPem });
    if (guard !== null && credentials.bundlePem !== bundleBefore) guard.setTrustBundle(credentials.bundlePem);
    notify({ kind: 'renewed', expiresAt: credentials.expiresAt });
    follow();
    schedule();
  }

  // Renewal runs from the join on, so that a workload that only calls others (no guard) keeps a valid SVID.
  schedule();

  return {
    get credentials() {
      return credentials;
    },
    guardOptions: (extra = {}) => ({
      service: options.service,
      trustDomain: options.trustDomain,
      trustBundle: credentials.bundlePem,
      svid: { cert: credentials.chainPem, key: credentials.keyPem },
      txnTokenKeys: { url: new URL('/v1/txn-token/jwks.json', options.url).href },
      policy: { keys: { keys: [...policyKeys] } },
      // Every decision is shipped to the control plane's collector, unless the caller says otherwise.
      ...(extra.auditSpoolDir === false
        ? {}
        : {
            audit: {
              collector: {
                url: new URL('/v1/audit/events', options.url).href,
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
    renew,
    controlPlane,
    txnToken: async (wanted) =>
      requestTxnToken(
        { url: options.url, trustDomain: options.trustDomain, dispatcher: controlPlane() },
        { ...wanted, subjectToken: await subjectOf(wanted) },
      ),
    request: (url, init) => client.request(url, init),
    async close() {
      closed = true;
      if (timer !== null) clearTimeout(timer);
      // A clean stop leaves the registry: the monitor raises no alert for the silence that follows.
      const leaving = heartbeat
        ?.deregister()
        .catch((error: unknown) =>
          notify({ kind: 'heartbeat-failed', reason: `could not deregister: ${(error as Error).message}` }),
        );
      await Promise.all([stream?.close(), leaving, pool?.agent.close(), client.close()]);
    },
  };
}

/** The policy-bundle signing keys, over TLS verified against the pinned bundle; none when the control plane serves no policy. */
async function fetchPolicyKeys(url: string, trustDomain: string, bundlePem: string): Promise<JWK[]> {
  const agent = controlPlaneAgent(trustDomain, { ca: bundlePem });
  try {
    const response = await request(new URL('/v1/policy/jwks.json', url), {
      dispatcher: agent,
      headersTimeout: 10_000,
      bodyTimeout: 10_000,
    });
    if (response.statusCode === 404) {
      await response.body.dump();
      return [];
    }
    const body = (await response.body.json()) as { keys?: unknown };
    if (response.statusCode !== 200 || !Array.isArray(body.keys))
      throw new Error(`GET /v1/policy/jwks.json answered ${response.statusCode}`);
    return body.keys as JWK[];
  } finally {
    await agent.close();
  }
}
