/**
 * Registers a guard with the control plane and keeps its entry fresh: `guard.status()` — routes and
 * actions, policy version in force, SVID expiry, mode, guard version — every `intervalMs` (10 s by
 * default, first at once). A failed report is retried at the next tick; the guard never depends on it.
 *
 * A report that gets no answer at all (refused, reset, timed out) means the control plane cannot be
 * reached from here: the first report that gets through again says since when
 * (`unreachable: { since, until }`), so that after an outage the monitor learns who was cut off, and
 * for how long — it cannot hear it during the outage. `deregister()` is the clean stop: the entry is
 * removed, and the silence that follows raises no alert (a crash, which cannot say so, does).
 */
import { request } from 'undici';
import type { GuardStatus } from '@lockstep/guard';
import { controlPlaneAgent } from './control-plane-agent.ts';

/** A stopping service waits this long at most for the control plane to take its deregistration. */
const DEREGISTER_TIMEOUT_MS = 3_000;

export interface HeartbeatOptions {
  readonly url: string;
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
  /** Stops reporting. The entry stays and goes stale: for a heartbeat that another one replaces. */
  stop(): Promise<void>;
  /**
   * Stops reporting and removes the entry: a clean stop. Rejects (stopped all the same) when the
   * control plane does not take it within 3 s; the monitor then reports the guard as silent.
   */
  deregister(): Promise<void>;
}

export function startRegistryHeartbeat(options: HeartbeatOptions): Heartbeat {
  const agent = controlPlaneAgent(options.trustDomain, options.tls);
  let unreachableSince = options.unreachableSince ?? null;
  const inFlight = new Set<Promise<void>>();

  const report = async (): Promise<void> => {
    const { routes, policyVersion, svidExpiresAt, mode, guardVersion, endpoints } = options.guard.status();
    const attemptAt = Date.now();
    const outageSince = unreachableSince;
    const unreachable =
      outageSince === null
        ? {}
        : { unreachable: { since: new Date(outageSince).toISOString(), until: new Date(attemptAt).toISOString() } };
    let response;
    try {
      response = await request(new URL('/v1/registry/heartbeat', options.url), {
        method: 'POST',
        dispatcher: agent,
        headers: { 'content-type': 'application/json' },
        headersTimeout: 10_000,
        bodyTimeout: 10_000,
        body: JSON.stringify({ routes, policyVersion, svidExpiresAt, mode, guardVersion, endpoints, ...unreachable }),
      });
    } catch (error) {
      unreachableSince ??= attemptAt;
      throw error;
    }
    const text = await response.body.text();
    if (response.statusCode !== 204)
      throw new Error(`registry heartbeat refused (${response.statusCode}): ${text.slice(0, 300)}`);
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
        const leaving = request(new URL('/v1/registry/deregister', options.url), {
          method: 'POST',
          dispatcher: agent,
          signal,
        });
        const response = await Promise.race([leaving, deadline]);
        const text = await Promise.race([response.body.text(), deadline]);
        if (response.statusCode !== 204) {
          throw new Error(`registry deregistration refused (${response.statusCode}): ${text.slice(0, 300)}`);
        }
      } finally {
        // Not close(): it would wait for a report the control plane never answers.
        await agent.destroy();
      }
    },
  };
}
