/**
 * Registers a guard with the control plane and keeps its entry fresh: `guard.status()` — routes and
 * actions, policy version in force, SVID expiry, mode, guard version — every `intervalMs` (10 s by
 * default, first at once). A failed report is retried at the next tick; the guard never depends on it.
 *
 * A report that gets no answer at all (refused, reset, timed out), or only "unavailable" (502, 503, 504:
 * a replica starting or cut from its store, a proxy with nothing behind it), means the control plane cannot be
 * reached from here: the first report that gets through again says since when
 * (`unreachable: { since, until }`), so that after an outage the monitor learns who was cut off, and
 * for how long — it cannot hear it during the outage. `deregister()` is the clean stop: the entry is
 * removed, and the silence that follows raises no alert (a crash, which cannot say so, does).
 *
 * With several control-plane URLs (replicas) each report is asked of them in turn: the control plane
 * is unreachable only when none of them answers (or each answers "unavailable"), so a replica down raises no
 * outage alert.
 */
import { request } from 'undici';
import type { GuardStatus } from '@lockstep/guard';
import { isFailover } from '@lockstep/identity';
import { controlPlaneAgent } from './control-plane-agent.ts';
import { connectTimeoutFor, endpointsOf, unexpectedAnswer, withFailover, type ControlPlaneUrls } from './failover.ts';

/** A stopping service waits this long at most for the control plane to take its deregistration. */
const DEREGISTER_TIMEOUT_MS = 3_000;

export interface HeartbeatOptions {
  /** The control plane: one URL, several (replicas, comma-separated or a list), or an endpoint set. */
  readonly url: ControlPlaneUrls;
  readonly trustDomain: string;
  readonly tls: { readonly cert: string; readonly key: string; readonly ca: string };
  readonly guard: { status(): GuardStatus };
  readonly intervalMs?: number;
  readonly onError?: (error: Error) => void;
  /** An outage the heartbeat this one replaces (after an SVID renewal) had not reported yet: epoch ms. */
  readonly unreachableSince?: number;
}

export interface Heartbeat {
  /** Sends one report now; resolves when the control plane has it. */
  beat(): Promise<void>;
  /** Since when (epoch ms) the control plane has given no answer, until a report gets through; else null. */
  readonly unreachableSince: number | null;
  /** The control plane URL that took the last report; null before the first. */
  readonly via: string | null;
  /** Stops reporting. The entry stays and goes stale: for a heartbeat that another one replaces. */
  stop(): Promise<void>;
  /**
   * Stops reporting and removes the entry: a clean stop. Rejects (stopped all the same) when the
   * control plane does not take it within 3 s; the monitor then reports the guard as silent.
   */
  deregister(): Promise<void>;
}

export function startRegistryHeartbeat(options: HeartbeatOptions): Heartbeat {
  // `endpoints` is the guard's own (where it listens), in its status.
  const controlPlane = endpointsOf(options.url);
  const agent = controlPlaneAgent(options.trustDomain, options.tls, undefined, connectTimeoutFor(controlPlane));
  let unreachableSince = options.unreachableSince ?? null;
  let via: string | null = null;
  const inFlight = new Set<Promise<void>>();

  const report = async (): Promise<void> => {
    const { routes, policyVersion, svidExpiresAt, mode, guardVersion, endpoints } = options.guard.status();
    const attemptAt = Date.now();
    const outageSince = unreachableSince;
    const unreachable =
      outageSince === null
        ? {}
        : { unreachable: { since: new Date(outageSince).toISOString(), until: new Date(attemptAt).toISOString() } };
    const body = JSON.stringify({
      routes,
      policyVersion,
      svidExpiresAt,
      mode,
      guardVersion,
      endpoints,
      ...unreachable,
    });
    // A report may be sent twice (the registry keeps the latest): any replica may take it.
    const sendTo = async (base: string, signal: AbortSignal) => {
      const response = await request(new URL('/v1/registry/heartbeat', base), {
        method: 'POST',
        dispatcher: agent,
        signal,
        headers: { 'content-type': 'application/json' },
        headersTimeout: 10_000,
        bodyTimeout: 10_000,
        body,
      });
      const text = await response.body.text();
      if (response.statusCode !== 204) {
        const message = `registry heartbeat refused (${response.statusCode}): ${text.slice(0, 300)}`;
        throw unexpectedAnswer(message, response.statusCode);
      }
      return base;
    };
    try {
      via = await withFailover(controlPlane, sendTo, { idempotent: true });
    } catch (error) {
      // An answer, even a refusal, is no outage: only no answer from any replica is, or "unavailable" from
      // the last one asked (withFailover goes on to the next on those: every replica said it).
      const status = (error as { status?: unknown }).status;
      if (typeof status !== 'number' || isFailover(status)) unreachableSince ??= attemptAt;
      throw error;
    }
    // Reported; a later outage (begun while this report was on its way) is kept for the next one.
    if (outageSince !== null && unreachableSince === outageSince) unreachableSince = null;
  };
  // Once stopping, nothing more is reported: a report sent after the deregistration (a policy event
  // on the stream that is closing at the same time) would register the guard again.
  let stopping = false;
  const beat = (): Promise<void> => {
    if (stopping) return Promise.resolve();
    const running = report();
    inFlight.add(running);
    void running.catch(() => {}).finally(() => inFlight.delete(running));
    return running;
  };
  const tick = () => void beat().catch((error: unknown) => options.onError?.(error as Error));
  tick();
  const timer = setInterval(tick, options.intervalMs ?? 10_000);
  timer.unref();
  return {
    beat,
    get unreachableSince() {
      return unreachableSince;
    },
    get via() {
      return via;
    },
    async stop() {
      stopping = true;
      clearInterval(timer);
      await agent.close();
    },
    async deregister() {
      stopping = true;
      clearInterval(timer);
      // One deadline for all of it: a request queued behind a connection that never completes does
      // not see its own abort signal until the connect timeout (10 s).
      const signal = AbortSignal.timeout(DEREGISTER_TIMEOUT_MS);
      const deadline = new Promise<never>((_resolve, reject) => {
        const timedOut = new Error(
          `the control plane did not take the deregistration within ${DEREGISTER_TIMEOUT_MS} ms (timeout)`,
        );
        signal.addEventListener('abort', () => reject(timedOut), { once: true });
      });
      deadline.catch(() => {});
      try {
        // A report still on its way would register the guard again after it left.
        await Promise.race([Promise.allSettled([...inFlight]), deadline]);
        const leave = async (base: string, attemptSignal: AbortSignal) => {
          const response = await request(new URL('/v1/registry/deregister', base), {
            method: 'POST',
            dispatcher: agent,
            signal: attemptSignal,
          });
          const text = await response.body.text();
          if (response.statusCode !== 204) {
            const message = `registry deregistration refused (${response.statusCode}): ${text.slice(0, 300)}`;
            throw unexpectedAnswer(message, response.statusCode);
          }
        };
        const leaving = withFailover(controlPlane, leave, {
          idempotent: true,
          deadlineMs: DEREGISTER_TIMEOUT_MS,
          signal,
        });
        leaving.catch(() => {}); // when the deadline wins, the rejection that follows is no news
        await Promise.race([leaving, deadline]);
      } finally {
        // Not close(): it would wait for a report the control plane never answers.
        await agent.destroy();
      }
    },
  };
}
