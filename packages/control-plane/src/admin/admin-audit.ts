/**
 * Every administrative action — allowed or refused — is an audit event of the same shape as a guard
 * decision, with the administrator's SPIFFE ID as the caller. Each event goes two ways:
 *
 * - to the audit trails attached with `attachAdminTrail` (the monitor's `recordAdminTrail`): an
 *   administrator's call waits for `writeAdminAction`, so its event is stored before the call runs
 *   and before its answer leaves (a crash cannot lose it from a queue); refused calls are handed
 *   over with their source and not waited for (the trail may rate-limit them: an outsider's flood
 *   must not delay or push out an administrator's events);
 * - to `lockstep:control-plane:admin`, for any other listener. It costs nothing when nobody listens.
 *
 * This package does not depend on the monitor: the trail attaches itself here, the routes only wait.
 */
import diagnostics from 'node:diagnostics_channel';
import { randomUUID } from 'node:crypto';
import type { DecisionEvent } from '@lockstep/guard';

export const ADMIN_CHANNEL = 'lockstep:control-plane:admin';
const channel = diagnostics.channel(ADMIN_CHANNEL);

export interface AdminAction {
  readonly caller: string | null;
  readonly method: string;
  readonly route: string;
  /** e.g. `admin:join-token.create`, `admin:revoke`. */
  readonly action: string;
  /** What the action is about: a service name, a revoked value… */
  readonly resource: string;
  readonly allowed: boolean;
  /** `LOCKSTEP_ALLOW`, or the refusal's error code. */
  readonly reason: string;
  readonly startedAt: number;
  /** One call's events share it (its authorisation, and its failure if it then fails). Default: a new one. */
  readonly requestId?: string;
  /** What the call said beyond its resource that the trail must keep (a revocation's kind and reason). */
  readonly detail?: Readonly<Record<string, string>>;
}

/**
 * An admin event: a guard decision's shape, plus `detail` on the calls that have one. Events without
 * it are written exactly as before, so nothing changes for the text (and hash) of any other event.
 */
export interface AdminEvent extends DecisionEvent {
  readonly detail?: Readonly<Record<string, string>>;
}

/** Where admin events are stored for good: the tamper-evident audit trail. */
export interface AdminTrailSink {
  /** Resolves once the event is stored; rejects when it cannot be stored now. Never drops it. */
  write(event: DecisionEvent): Promise<void>;
  /**
   * A refused call (no administrator's SVID) from `source`: the caller's SPIFFE ID, or `address <ip>`
   * without one. Not waited for; the trail may aggregate or drop such events (counted) under a flood.
   */
  refused(event: DecisionEvent, source: string): void;
}

const sinks = new Set<AdminTrailSink>();

/** The sink receives every admin event of this process from now on, until the returned function runs. */
export function attachAdminTrail(sink: AdminTrailSink): () => void {
  sinks.add(sink);
  return () => {
    sinks.delete(sink);
  };
}

/**
 * An administrator's call: resolves once every attached trail holds its event, rejects when one
 * cannot take it. With no trail attached (a bare `startControlPlane`), it resolves at once.
 */
export async function writeAdminAction(action: AdminAction): Promise<void> {
  if (sinks.size === 0 && !channel.hasSubscribers) return;
  const event = adminEvent(action);
  channel.publish(event);
  await Promise.all([...sinks].map((sink) => sink.write(event)));
}

/**
 * An event nobody can wait for (a policy change read from disk): queued in every trail, which retries
 * and says loudly when it cannot store it.
 */
export function recordAdminAction(action: AdminAction): void {
  writeAdminAction(action).catch(() => {
    // The trail has said so through its onError, and keeps the event queued.
  });
}

/** A call refused before it ran (401/403): published, and offered to the trails from `source`. */
export function recordRefusedAdminCall(action: AdminAction, source: string): void {
  if (sinks.size === 0 && !channel.hasSubscribers) return;
  const event = adminEvent(action);
  channel.publish(event);
  for (const sink of sinks) sink.refused(event, source);
}

export function subscribeAdminActions(listener: (event: DecisionEvent) => void): () => void {
  const onMessage = (message: unknown) => listener(message as DecisionEvent);
  diagnostics.subscribe(ADMIN_CHANNEL, onMessage);
  return () => diagnostics.unsubscribe(ADMIN_CHANNEL, onMessage);
}

function adminEvent(action: AdminAction): AdminEvent {
  return {
    time: new Date().toISOString(),
    service: 'control-plane',
    requestId: action.requestId ?? randomUUID(),
    caller: action.caller,
    sub: null,
    txn: null,
    method: action.method,
    route: action.route,
    action: action.action,
    resource: action.resource,
    decision: action.allowed ? 'allow' : 'deny',
    policyIds: [],
    policyVersion: null,
    reason: action.reason,
    dryRun: false,
    latencyMs: Math.round((performance.now() - action.startedAt) * 1000) / 1000,
    traceId: null,
    ...(action.detail === undefined ? {} : { detail: action.detail }),
  };
}
