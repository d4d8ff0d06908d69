/**
 * Everything a guarded service needs from the control plane, in one call: join with a one-time
 * token (key generated here, bundle pinned by the token), then keep the guard in step — renew the
 * SVID at half its life (with jitter, so that a fleet does not renew at once) and hand it to
 * `guard.setSvid`, follow the policy/revocation stream, and report to the registry.
 *
 *   const agent = await joinAsWorkload({ url, trustDomain, joinToken, service });
 *   const guard = await createGuard(agent.guardOptions());
 *   agent.attach(guard);
 *
 * Fail-static: when the control plane cannot be reached the guard keeps what it has; renewal is
 * retried every `retryMs` until the SVID expires, and `onEvent` reports every failure.
 */
import type { GuardStatus } from '@lockstep/guard';
import type { JWK } from 'jose';
import { request } from 'undici';
import { controlPlaneAgent } from './control-plane-agent.ts';
import { joinControlPlane, renewWithControlPlane, type WorkloadCredentials } from './enrol-client.ts';
import { connectGuardStream, type GuardStream, type StreamEvent, type StreamTarget } from './guard-stream.ts';
import { startRegistryHeartbeat, type Heartbeat } from './registry-heartbeat.ts';

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
  readonly heartbeatMs?: number;
  /** How the guard follows the control plane: `stream` (default, SSE with polling while it is down) or `poll`. */
  readonly transport?: 'stream' | 'poll';
  readonly pollMs?: number;
}

export interface WorkloadAgent {
  /** The SVID in use now. */
  readonly credentials: WorkloadCredentials;
  /**
   * What `createGuard` needs from the control plane: service, trust domain, trust bundle, SVID, the
   * Txn-Token Service's JWKS URL (fetched, refreshed, refetched on an unknown `kid`: key rotations
   * are followed), the policy keys, and — given `auditSpoolDir` — shipping to the collector.
   */
  guardOptions(options?: { auditSpoolDir?: string }): {
    service: string; trustDomain: string; trustBundle: string; svid: { cert: string; key: string }; txnTokenKeys: { url: string }; policy: { keys: { keys: JWK[] } };
    audit?: { collector: { url: string; spoolDir: string } };
  };
  /** Starts renewal, the stream and the heartbeat for this guard. */
  attach(guard: AttachableGuard): void;
  /** Renews now (normally the timer does). */
  renew(): Promise<void>;
  /** Stops following, and leaves the registry (a clean stop: no "guard silent" alert follows). */
  close(): Promise<void>;
}

export async function joinAsWorkload(options: WorkloadAgentOptions): Promise<WorkloadAgent> {
  let credentials = await joinControlPlane({ url: options.url, trustDomain: options.trustDomain, joinToken: options.joinToken, service: options.service });
  const policyKeys = await fetchPolicyKeys(options.url, options.trustDomain, credentials.bundlePem);
  const notify = options.onEvent ?? (() => {});
  let guard: AttachableGuard | null = null;
  let stream: GuardStream | null = null;
  let heartbeat: Heartbeat | null = null;
  let timer: NodeJS.Timeout | null = null;
  let closed = false;

  const tls = () => ({ cert: credentials.chainPem, key: credentials.keyPem, ca: credentials.bundlePem });

  function follow(): void {
    if (guard === null || closed) return;
    const previous = { stream, heartbeat };
    // The stream and the heartbeat present the SVID: after a renewal they reconnect with the new one.
    stream = connectGuardStream({
      url: options.url, trustDomain: options.trustDomain, tls: tls(), target: guard,
      ...(options.transport === undefined ? {} : { transport: options.transport }), ...(options.pollMs === undefined ? {} : { pollMs: options.pollMs }),
      onEvent: (event) => {
        // A new trust bundle (root rotation) is used for the next connections to the control plane too.
        if (event.kind === 'trust-bundle') credentials = { ...credentials, bundlePem: event.bundle };
        notify(event);
        // The registry learns a new policy version at once, so that drift shows without waiting a heartbeat.
        if (event.kind === 'policy') void heartbeat?.beat().catch((error: unknown) => notify({ kind: 'heartbeat-failed', reason: (error as Error).message }));
      },
    });
    // An outage the previous heartbeat saw and could not report yet is the new one's to report.
    const unreported = previous.heartbeat?.unreachableSince ?? null;
    heartbeat = startRegistryHeartbeat({
      url: options.url, trustDomain: options.trustDomain, tls: tls(), guard, intervalMs: options.heartbeatMs ?? 10_000,
      onError: (error) => notify({ kind: 'heartbeat-failed', reason: error.message }),
      ...(unreported === null ? {} : { unreachableSince: unreported }),
    });
    void previous.stream?.close();
    void previous.heartbeat?.stop();
  }

  function schedule(delayMs?: number): void {
    if (closed) return;
    const lifetime = credentials.expiresAt.getTime() - Date.now();
    // Half-life, minus up to a tenth of the lifetime of jitter.
    const wait = delayMs ?? Math.max(1_000, lifetime / 2 - Math.random() * lifetime / 10);
    timer = setTimeout(() => void renew().catch(() => {}), wait);
    timer.unref();
  }

  async function renew(): Promise<void> {
    if (timer !== null) clearTimeout(timer);
    const bundleBefore = credentials.bundlePem;
    try {
      credentials = await renewWithControlPlane({ url: options.url, trustDomain: options.trustDomain, current: { chainPem: credentials.chainPem, keyPem: credentials.keyPem }, bundlePem: credentials.bundlePem });
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

  return {
    get credentials() {
      return credentials;
    },
    guardOptions: (extra = {}) => ({
      service: options.service, trustDomain: options.trustDomain, trustBundle: credentials.bundlePem, svid: { cert: credentials.chainPem, key: credentials.keyPem },
      txnTokenKeys: { url: new URL('/v1/txn-token/jwks.json', options.url).href },
      policy: { keys: { keys: [...policyKeys] } },
      // With a spool directory, decisions are also shipped to the control plane's collector.
      ...(extra.auditSpoolDir === undefined ? {} : { audit: { collector: { url: new URL('/v1/audit/events', options.url).href, spoolDir: extra.auditSpoolDir } } }),
    }),
    attach(target) {
      if (guard !== null) throw new TypeError('this workload agent is already attached to a guard');
      guard = target;
      target.onListening?.(() => void heartbeat?.beat().catch((error: unknown) => notify({ kind: 'heartbeat-failed', reason: (error as Error).message })));
      follow();
      schedule();
    },
    renew,
    async close() {
      closed = true;
      if (timer !== null) clearTimeout(timer);
      // A clean stop leaves the registry: the monitor raises no alert for the silence that follows.
      const leaving = heartbeat?.deregister()
        .catch((error: unknown) => notify({ kind: 'heartbeat-failed', reason: `could not deregister: ${(error as Error).message}` }));
      await Promise.all([stream?.close(), leaving]);
    },
  };
}

/** The policy-bundle signing keys, over TLS verified against the pinned bundle; none when the control plane serves no policy. */
async function fetchPolicyKeys(url: string, trustDomain: string, bundlePem: string): Promise<JWK[]> {
  const agent = controlPlaneAgent(trustDomain, { ca: bundlePem });
  try {
    const response = await request(new URL('/v1/policy/jwks.json', url), { dispatcher: agent, headersTimeout: 10_000, bodyTimeout: 10_000 });
    if (response.statusCode === 404) {
      await response.body.dump();
      return [];
    }
    const body = await response.body.json() as { keys?: unknown };
    if (response.statusCode !== 200 || !Array.isArray(body.keys)) throw new Error(`GET /v1/policy/jwks.json answered ${response.statusCode}`);
    return body.keys as JWK[];
  } finally {
    await agent.close();
  }
}
