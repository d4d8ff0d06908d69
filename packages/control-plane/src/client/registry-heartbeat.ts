/**
 * Registers a guard with the control plane and keeps its entry fresh: `guard.status()` — routes and
 * actions, policy version in force, SVID expiry, mode, guard version — every `intervalMs` (10 s by
 * default, first at once). A failed report is retried at the next tick; the guard never depends on it.
 */
import { request } from 'undici';
import type { GuardStatus } from '@lockstep/guard';
import { controlPlaneAgent } from './control-plane-agent.ts';

export interface HeartbeatOptions {
  readonly url: string;
  readonly trustDomain: string;
  readonly tls: { readonly cert: string; readonly key: string; readonly ca: string };
  readonly guard: { status(): GuardStatus };
  readonly intervalMs?: number;
  readonly onError?: (error: Error) => void;
}

export interface Heartbeat {
  /** Sends one report now; resolves when the control plane has it. */
  beat(): Promise<void>;
  stop(): Promise<void>;
}

export function startRegistryHeartbeat(options: HeartbeatOptions): Heartbeat {
  const agent = controlPlaneAgent(options.trustDomain, options.tls);
  const beat = async (): Promise<void> => {
    const { routes, policyVersion, svidExpiresAt, mode, guardVersion, endpoints } = options.guard.status();
    const response = await request(new URL('/v1/registry/heartbeat', options.url), {
      method: 'POST', dispatcher: agent, headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ routes, policyVersion, svidExpiresAt, mode, guardVersion, endpoints }), headersTimeout: 10_000, bodyTimeout: 10_000,
    });
    const text = await response.body.text();
    if (response.statusCode !== 204) throw new Error(`registry heartbeat refused (${response.statusCode}): ${text.slice(0, 300)}`);
  };
  const tick = () => void beat().catch((error: unknown) => options.onError?.(error as Error));
  tick();
  const timer = setInterval(tick, options.intervalMs ?? 10_000);
  timer.unref();
  return {
    beat,
    async stop() {
      clearInterval(timer);
      await agent.close();
    },
  };
}
