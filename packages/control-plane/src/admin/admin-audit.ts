/**
 * Every administrative action — allowed or refused — is an audit event of the same shape as a guard
 * decision, on `lockstep:control-plane:admin`, with the administrator's SPIFFE ID as the caller. It
 * costs nothing when nobody listens; the monitor's shipper will be a subscriber.
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
}

export function recordAdminAction(action: AdminAction): void {
  if (!channel.hasSubscribers) return;
  const event: DecisionEvent = {
    time: new Date().toISOString(),
    service: 'control-plane',
    requestId: randomUUID(),
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
  };
  channel.publish(event);
}

export function subscribeAdminActions(listener: (event: DecisionEvent) => void): () => void {
  const onMessage = (message: unknown) => listener(message as DecisionEvent);
  diagnostics.subscribe(ADMIN_CHANNEL, onMessage);
  return () => diagnostics.unsubscribe(ADMIN_CHANNEL, onMessage);
}
